"""Quality without ground truth: an estimated PSNR for each cleaned scan, and a flag for
scans unlike anything the model was trained on.

The estimate adds two errors, both measured in the model's look (paper 0, ink 1):

* how far the model lands from a known answer at this scan's noise: its own output ``x^``,
  given fresh clipped noise of the scan's measured level, is cleaned again, and the second
  output's distance from ``x^`` is the model's error on an image like this one (one extra
  model pass per scan);
* what the residual ``y - E[clip(x^ + noise)]`` holds beyond noise at the scale of strokes
  (a band-pass, 3x3 minus 11x11 means, less what white noise leaves in it, scaled by the
  share of a digit's energy the band keeps): content the output lost. A flat output leaves
  the digit there and scores low.

The sum, at the scan's own contrast, gives the PSNR. Measured against the truth over the
scan test set (``python -m bench.quality``, README "Quality without ground truth"): close
for white noise, too high where blur or JPEG took detail that the residual cannot show.

The flag (:func:`ood_reason`) names what makes a scan unlike the training digits: no ink
at all, noise beyond the strongest the model was trained on, or tones spread like a photo's
rather than ink on paper.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.blindspot import clipped_moments, clipped_noise_level

MAX_DB = 40.0  # the estimate is capped here: beyond it noise hides any error
BAND_NOISE = 1 / 9 - 1 / 121  # share of white noise's energy the band-pass keeps
BAND_DIGIT = 0.32  # share of a digit's energy it keeps (median over MNIST's training digits)
#: Excess band energy within this share of the noise's (about two standard errors of the
#: noise's own band energy on a 28x28 image) is taken for noise, not for lost content.
BAND_SLACK = 0.3
#: Noise above this level in the model's look is beyond the scan recipe's strongest
#: (:data:`denoiser.degrade.Degradation.noise`: 0.6 at full contrast).
NOISE_LIMIT = 0.6
#: Thresholds measured with ``python -m bench.quality`` (200 MNIST test digits with the
#: tutorial's noise: 5% of them had less ink than this, 5% more mid tones than this).
MIN_INK = 0.03  # share of output pixels above 0.4 below which a scan counts as blank
MAX_MIDTONES = 1.1  # mid-tone pixels per inked pixel above which it looks like a photo


def renoised(mapped: np.ndarray, output: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray]:
    """The scan's noise level and its output with fresh noise of that level: the input of
    the check pass whose output :func:`estimated_psnr` takes."""
    sigma = clipped_noise_level(mapped, output)
    noise = np.random.default_rng(seed).standard_normal(output.shape).astype(np.float32)
    return sigma, np.clip(output + sigma * noise, 0, 1).astype(np.float32)


def _band(image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]

    def mean(k: int) -> torch.Tensor:
        pad = min(k // 2, x.shape[-1] - 1, x.shape[-2] - 1)
        return F.avg_pool2d(F.pad(x, (pad,) * 4, mode="reflect"), 2 * pad + 1, 1)

    return (mean(3) - mean(11))[0, 0].numpy()


def estimated_mse(mapped: np.ndarray, output: np.ndarray, recheck: np.ndarray, sigma: float) -> float:
    """Estimated mean squared error of ``output`` in the model's look (``recheck``: the model's
    output for :func:`renoised`'s input)."""
    model_error = float(np.mean((recheck - output) ** 2))
    mean, variance = clipped_moments(torch.from_numpy(np.asarray(output, np.float32)), sigma)
    residual = mapped - mean.numpy()
    noise_part = float(variance.mean()) * BAND_NOISE
    lost = float(np.mean(_band(residual) ** 2)) - noise_part * (1 + BAND_SLACK)
    return model_error + max(lost, 0.0) / BAND_DIGIT


def estimated_psnr(mapped: np.ndarray, output: np.ndarray, recheck: np.ndarray, sigma: float, *,
                   paper: float, ink: float) -> float:
    """Estimated PSNR (dB) of the cleaned scan at its own contrast (``ink - paper``)."""
    mse = estimated_mse(mapped, output, recheck, sigma) * (ink - paper) ** 2
    return MAX_DB if mse <= 10 ** (-MAX_DB / 10) else min(MAX_DB, -10 * math.log10(mse))


def ood_reason(output: np.ndarray, sigma: float) -> str | None:
    """Why a scan is unlike the training digits, from its output in the model's look and its
    noise level; None when nothing is."""
    inked = output > 0.5 * output.max() if output.max() > 0 else np.zeros(output.shape, bool)
    if float(np.mean(output > 0.4)) < MIN_INK:
        return "blank: no ink found"
    if sigma > NOISE_LIMIT:
        return f"noise {sigma:.2f} beyond the trained range ({NOISE_LIMIT})"
    mid = float(np.mean((output > 0.15) & (output < 0.55))) / max(float(np.mean(inked)), 1e-6)
    if mid > MAX_MIDTONES:
        return "tones of a photo, not ink on paper"
    return None
