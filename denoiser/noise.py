"""Noise synthesis: the seed's Gaussian noise plus salt-and-pepper, Poisson and speckle.

A spec string picks the kind and its level:

=================  ====================================================================
``gaussian:0.5``   ``clip(x + 0.5 * randn, 0, 1)``, the seed's noise (level = std dev)
``salt-pepper:0.1``  10% of pixels set to 0 or 1, half each (level = fraction)
``poisson:30``     shot noise at a peak of 30 photons: ``Poisson(30 x) / 30``, clipped
``speckle:0.3``    multiplicative: ``clip(x + 0.3 * x * randn, 0, 1)``
=================  ====================================================================

Noise is drawn on the CPU from an explicit ``torch.Generator``, so the same seed gives the
same noise on every machine and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from denoiser.data import to_float

NOISE_KINDS = ("gaussian", "salt-pepper", "poisson", "speckle")
DEFAULT_NOISE = "gaussian:0.5"


@dataclass(frozen=True)
class NoiseSpec:
    kind: str
    level: float

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(
                f"unknown noise kind {self.kind!r}; choose one of {', '.join(NOISE_KINDS)}"
            )
        if not np.isfinite(self.level) or self.level < 0:
            raise ValueError(f"noise level must be a finite number >= 0, got {self.level}")
        if self.kind == "salt-pepper" and self.level > 1:
            raise ValueError(f"salt-pepper level is a fraction in [0, 1], got {self.level}")
        if self.kind == "poisson" and self.level == 0:
            raise ValueError("poisson level is the peak photon count and must be > 0")

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """``'gaussian:0.5'`` -> ``NoiseSpec('gaussian', 0.5)``."""
        kind, sep, level = text.strip().partition(":")
        if not sep:
            raise ValueError(
                f"noise spec {text!r} is not KIND:LEVEL (e.g. gaussian:0.5, salt-pepper:0.1, "
                "poisson:30, speckle:0.3)"
            )
        try:
            value = float(level)
        except ValueError:
            raise ValueError(f"noise level in {text!r} is not a number") from None
        return cls(kind.strip().lower(), value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def add_noise(images: torch.Tensor, *, spec: NoiseSpec, rng: torch.Generator) -> torch.Tensor:
    """A noisy copy of float ``images`` in [0, 1] (any shape), on the CPU generator ``rng``.

    The noise is drawn on the CPU and moved to ``images``' device, so results do not depend
    on the device.
    """
    shape, device = images.shape, images.device
    clean = images.float()

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=rng).to(device)

    def rand() -> torch.Tensor:
        return torch.rand(shape, generator=rng).to(device)

    if spec.kind == "gaussian":
        noisy = clean + spec.level * randn()
    elif spec.kind == "speckle":
        noisy = clean + spec.level * clean * randn()
    elif spec.kind == "poisson":
        rate = (clean.clamp(0, 1) * spec.level).cpu()
        noisy = (torch.poisson(rate, generator=rng) / spec.level).to(device)
    else:  # salt-pepper
        hit = rand() < spec.level
        salt = rand() < 0.5
        noisy = torch.where(hit, salt.float(), clean)
    return noisy.clamp_(0.0, 1.0)


def noisy_copy(images: np.ndarray, *, spec: NoiseSpec, seed: int) -> np.ndarray:
    """Noisy float32 ``(N, H, W)`` images from uint8 or float ``images``; reproducible by seed."""
    rng = torch.Generator().manual_seed(seed)
    clean = torch.from_numpy(to_float(images))
    return add_noise(clean, spec=spec, rng=rng).numpy()
