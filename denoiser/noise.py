"""Noise synthesis: the seed's Gaussian noise plus salt-and-pepper, Poisson and speckle.

A spec string picks the kind and its level:

=================  ====================================================================
``gaussian:0.5``   ``clip(x + 0.5 * randn, 0, 1)``, the seed's noise (level = std dev)
``salt-pepper:0.1``  10% of pixels set to 0 or 1, half each (level = fraction)
``poisson:30``     shot noise at a peak of 30 photons: ``Poisson(30 x) / 30``, clipped
``speckle:0.3``    multiplicative: ``clip(x + 0.3 * x * randn, 0, 1)``
=================  ====================================================================

A range such as ``gaussian:0.1-0.7`` draws each image's level uniformly from it: training
on a range gives one *blind* model for noise of unknown strength.

Noise is drawn from an explicit ``torch.Generator``. A CPU generator gives the same noise
on every machine and device; training draws from a generator on its own device, so the
noise never crosses the bus.
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
    level_max: float | None = None  # set for a range: levels uniform in [level, level_max]

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(
                f"unknown noise kind {self.kind!r}; choose one of {', '.join(NOISE_KINDS)}"
            )
        for value in (self.level, self.high):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"noise level must be a finite number >= 0, got {value}")
            if self.kind == "salt-pepper" and value > 1:
                raise ValueError(f"salt-pepper level is a fraction in [0, 1], got {value}")
        if self.kind == "poisson" and self.level == 0:
            raise ValueError("poisson level is the peak photon count and must be > 0")
        if self.high < self.level:
            raise ValueError(f"noise range {self.level:g}-{self.high:g} runs backwards")

    @property
    def high(self) -> float:
        return self.level if self.level_max is None else self.level_max

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """``'gaussian:0.5'`` -> ``NoiseSpec('gaussian', 0.5)``."""
        kind, sep, level = text.strip().partition(":")
        if not sep:
            raise ValueError(
                f"noise spec {text!r} is not KIND:LEVEL (e.g. gaussian:0.5, salt-pepper:0.1, "
                "poisson:30, speckle:0.3)"
            )
        level = level.strip()
        cut = level.find("-", 1)  # a range LOW-HIGH (a leading minus is a sign)
        parts = [level] if cut < 0 else [level[:cut], level[cut + 1 :]]
        try:
            values = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"noise level in {text!r} is not a number or a range LOW-HIGH") from None
        return cls(kind.strip().lower(), *values)

    def __str__(self) -> str:
        if self.level_max is None or self.level_max == self.level:
            return f"{self.kind}:{self.level:g}"
        return f"{self.kind}:{self.level:g}-{self.level_max:g}"


def add_noise(images: torch.Tensor, *, spec: NoiseSpec, rng: torch.Generator) -> torch.Tensor:
    """A noisy copy of float ``images`` in [0, 1] (first axis: images), drawn from ``rng``.

    The noise is drawn on ``rng``'s device and the result lands on ``images``' device: with
    a CPU generator the noise is the same whatever the device.
    """
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
