"""Noise synthesis: the tutorial's Gaussian noise plus salt-and-pepper, Poisson and speckle.

A spec string picks the kind and its level:

=================  ====================================================================
``gaussian:0.5``   ``clip(x + 0.5 * randn, 0, 1)``, the tutorial's noise (level = std dev)
``salt-pepper:0.1``  10% of pixels set to 0 or 1, half each (level = fraction)
``poisson:30``     shot noise at a peak of 30 photons: ``Poisson(30 x) / 30``, clipped
``speckle:0.3``    multiplicative: ``clip(x + 0.3 * x * randn, 0, 1)``
``scan``           realistic scans (:mod:`denoiser.noise.degrade`): paper and ink tones, both
                   polarities, texture, lighting, blur, noise, dust, JPEG, in random
                   order; ``scan:1.5`` scales its noise, dust and blur by 1.5
=================  ====================================================================

``scan`` changes the clean target too: the truth is the digit on its paper in its ink,
and a model trained on it sees each image through the tone map of :mod:`denoiser.scans.tones`
(:func:`denoiser.training.loop.training_pair`), as the cleaner later shows it real scans.

A range such as ``gaussian:0.1-0.7`` draws each image's level uniformly from it: training
on a range gives one *blind* model for noise of unknown strength.

Noise is drawn from an explicit ``torch.Generator``. A CPU generator gives the same noise
on every machine and device; training draws from a generator on its own device, so the
noise never crosses the bus.
"""

from __future__ import annotations

import numpy as np
import torch

from denoiser.data.arrays import to_float
from denoiser.noise import degrade
from denoiser.noise.spec import NoiseSpec


def add_noise(images: torch.Tensor, *, spec: NoiseSpec, rng: torch.Generator) -> torch.Tensor:
    """A noisy copy of float ``images`` in [0, 1] (first axis: images), drawn from ``rng``.

    The noise is drawn on ``rng``'s device and the result lands on ``images``' device: with
    a CPU generator the noise is the same whatever the device.
    """
    if spec.kind == "scan":
        raise ValueError("scan noise changes the truth too: use training_pair or synthesize")
    shape, device = images.shape, images.device
    clean = images.float().to(rng.device)

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=rng, device=rng.device)

    def rand(size: tuple[int, ...] = shape) -> torch.Tensor:
        return torch.rand(size, generator=rng, device=rng.device)

    level: float | torch.Tensor = spec.level
    if spec.high != spec.level:  # one level per image, uniform in the range
        per_image = (len(clean),) + (1,) * (clean.dim() - 1)
        level = spec.level + (spec.high - spec.level) * rand(per_image)
    if spec.kind == "gaussian":
        noisy = clean + level * randn()
    elif spec.kind == "speckle":
        noisy = clean + level * clean * randn()
    elif spec.kind == "poisson":
        noisy = torch.poisson(clean.clamp(0, 1) * level, generator=rng) / level
    else:  # salt-pepper
        hit = rand() < level
        salt = rand() < 0.5
        noisy = torch.where(hit, salt.float(), clean)
    return noisy.clamp_(0.0, 1.0).to(device)


def noisy_copy(images: np.ndarray, *, spec: NoiseSpec, seed: int) -> np.ndarray:
    """Noisy float32 ``(N, H, W)`` images from uint8 or float ``images``; reproducible by seed."""
    rng = torch.Generator().manual_seed(seed)
    clean = torch.from_numpy(to_float(images))
    return add_noise(clean, spec=spec, rng=rng).numpy()


def synthesize(images: np.ndarray, *, spec: NoiseSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, noisy)`` float32 ``(N, H, W)`` copies of uint8 or float ``images``, by seed.

    The truth is the images themselves, except for ``scan``, where it is the clean scan
    (the digit on its paper, in its ink, at its own scale of 1).
    """
    clean = torch.from_numpy(to_float(images))
    if spec.kind != "scan":
        return clean.numpy(), noisy_copy(images, spec=spec, seed=seed)
    rng = torch.Generator().manual_seed(seed)
    truth, degraded = degrade.degrade(clean, degrade.SCAN.scaled(spec.level), rng=rng, scale=1.0)
    return truth.numpy(), degraded.numpy()
