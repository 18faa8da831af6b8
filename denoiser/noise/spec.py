"""A noise spec (``gaussian:0.5``, ``salt-pepper:0.1``, ``scan``, ``gaussian:0.1-0.7``) parsed
and checked. Plain Python, so the command line checks a spec without importing torch;
:mod:`denoiser.noise.synthetic` draws the noise a spec names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NOISE_KINDS = ("gaussian", "salt-pepper", "poisson", "speckle", "scan")
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
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"noise level must be a finite number >= 0, got {value}")
            if self.kind == "salt-pepper" and value > 1:
                raise ValueError(f"salt-pepper level is a fraction in [0, 1], got {value}")
        if self.kind == "scan" and (self.level_max not in (None, self.level) or self.level == 0):
            raise ValueError("scan takes one strength > 0 (scan or scan:1.5), not a range")
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
        if kind.strip().lower() == "scan" and not sep:
            return cls("scan", 1.0)
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
        if self.kind == "scan":
            return "scan" if self.level == 1 else f"scan:{self.level:g}"
        if self.level_max is None or self.level_max == self.level:
            return f"{self.kind}:{self.level:g}"
        return f"{self.kind}:{self.level:g}-{self.level_max:g}"
