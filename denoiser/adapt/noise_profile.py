"""A folder's noise as adaptation sees it: each sampled scan's level of clipped Gaussian
noise, and whether that describes the scan at all.

Adapting (:mod:`denoiser.adapt.fine_tune`) trains on clean digits given white noise of the folder's
measured levels. That is right for a folder whose noise *is* white; a residual that is alike
between neighbouring pixels (blur, JPEG's blocks, dust, uneven lighting) is not, and its
"level" is not its noise: on scans with uneven lighting and noise of 0.05-0.1 the measured
level was 0.35. Measured (``bench.adapt``, a folder of the scan test set's kinds mixed):
the adapted model gained 1.1 dB on its white-noise kinds and lost 1.7-3.9 dB on scanner,
dust, lighting and 3x-scale scans, while the gate's digits (given white noise) said +2 dB.
So each scan's residual correlation is measured too
(:func:`denoiser.noise.blindspot.residual_correlation`), and a folder is *white* when at most
:data:`MAX_CORRELATED_SHARE` of its scans exceed :data:`MAX_CORRELATION`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from denoiser.models.infer import denoise_images
from denoiser.noise.blindspot import clipped_noise_level, residual_correlation

#: A scan's residual correlation above which its noise is not white. Measured on 300 scans
#: each (the default scan model's residuals): Gaussian noise of 0.2-0.7 and restyled
#: handwriting at most 3% of scans above 0.08; scanner (blur, JPEG) 27% above 0.1, dust 46%,
#: 3x-scale scans 89%, uneven lighting 100%.
MAX_CORRELATION = 0.1
#: A folder with a larger share of such scans is not white: adapting would teach the wrong noise.
MAX_CORRELATED_SHARE = 0.1


@dataclass(frozen=True)
class NoiseProfile:
    """The folder's measured noise levels, in the model's look, and each scan's residual
    correlation (empty: not measured, taken as white)."""

    levels: tuple[float, ...]
    correlations: tuple[float, ...] = ()

    @classmethod
    def measure(cls, parent: torch.nn.Module, inputs: list[np.ndarray], device: torch.device | str = "cpu",
                estimates: list[np.ndarray] | None = None) -> NoiseProfile:
        """``estimates``: the parent's outputs of ``inputs``, when already made."""
        if estimates is None:
            estimates = denoise_images(parent, inputs, device=device)
        pairs = list(zip(inputs, estimates, strict=True))
        return cls(tuple(round(clipped_noise_level(x, p), 4) for x, p in pairs),
                   tuple(round(residual_correlation(x, p), 4) for x, p in pairs))

    @property
    def correlated_share(self) -> float:
        """Share of the scans whose noise is not white."""
        if not self.correlations:
            return 0.0
        return float(np.mean(np.asarray(self.correlations) > MAX_CORRELATION))

    @property
    def white(self) -> bool:
        """Whether white noise of the measured levels describes the folder."""
        return self.correlated_share <= MAX_CORRELATED_SHARE

    def white_levels(self) -> tuple[float, ...]:
        """The levels of the scans whose noise is white (all, if none is)."""
        if not self.correlations:
            return self.levels
        kept = tuple(s for s, c in zip(self.levels, self.correlations, strict=True) if c <= MAX_CORRELATION)
        return kept or self.levels

    def summary(self) -> dict[str, float]:
        levels = np.asarray(self.levels)
        return {"median": float(np.median(levels)), "p10": float(np.percentile(levels, 10)),
                "p90": float(np.percentile(levels, 90)), "correlated_share": round(self.correlated_share, 4)}

    def within(self, other: NoiseProfile, tolerance: float = 0.25) -> bool:
        """Whether this profile's median lies within ``other``'s 10-90% band, widened by
        ``tolerance`` of its median (the test for re-adapting on a later run)."""
        mine, theirs = self.summary(), other.summary()
        slack = tolerance * max(theirs["median"], 0.02)
        return theirs["p10"] - slack <= mine["median"] <= theirs["p90"] + slack


def readapt_reason(state: dict | None, parent_id: str, profile: NoiseProfile) -> str | None:
    """Why a folder's adapted model must be made again (None: reuse it): none yet, another
    parent now, the folder's noise has drifted out of the band it was adapted on, or it has
    turned white or stopped being white (a scanner that began to blur, at the same level)."""
    if state is None:
        return "no adapted model for this folder yet"
    if state["parent"] != parent_id:
        return f"the model to adapt is now {parent_id}, not {state['parent']}"
    before = NoiseProfile(tuple(state["levels"]), tuple(state.get("correlations", ())))
    if profile.white != before.white:
        now = "white" if profile.white else "not white"
        return (f"the folder's noise is now {now}: {profile.correlated_share:.0%} of scans have noise alike "
                f"between neighbouring pixels, against {before.correlated_share:.0%} when it was adapted")
    if not profile.within(before):
        now, then = profile.summary()["median"], before.summary()
        return f"the folder's noise drifted: median {now:.3f}, adapted on {then['p10']:.3f}-{then['p90']:.3f}"
    return None


def noisy_like(clean: torch.Tensor, levels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(N, 1, H, W) clean images in the model's look with clipped Gaussian noise, one level per
    image drawn from ``levels``."""
    pick = torch.randint(0, len(levels), (len(clean),), generator=rng)
    sigma = levels[pick].view(-1, 1, 1, 1)
    return (clean + sigma * torch.randn(clean.shape, generator=rng)).clamp(0, 1)
