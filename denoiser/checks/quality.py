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
at all, noise beyond the strongest the model was trained on, tones spread like a photo's
rather than ink on paper, or, with a model of digit shapes (:mod:`denoiser.checks.shapes`), a
shape unlike any digit's (a letter, a symbol).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.noise.blindspot import clipped_moments, clipped_noise_level, noise_measured

MAX_DB = 40.0  # the estimate is capped here: beyond it noise hides any error
BAND_NOISE = 1 / 9 - 1 / 121  # share of white noise's energy the band-pass keeps
BAND_DIGIT = 0.32  # share of a digit's energy it keeps (median over MNIST's training digits)
#: Excess band energy within this share of the noise's (about two standard errors of the
#: noise's own band energy on a 28x28 image) is taken for noise, not for lost content.
BAND_SLACK = 0.3
#: Noise above this level in the model's look is beyond the scan recipe's strongest
#: (:data:`denoiser.noise.degrade.Degradation.noise`: 0.6 at full contrast).
NOISE_LIMIT = 0.6
#: Thresholds measured with ``python -m bench.quality``: 5% of 200 MNIST test digits with
#: the tutorial's noise had less ink than MIN_INK; under 1% of 2,000 had more mid tones than
#: MAX_MIDTONES, and 90% of photo-like patches did (at 1.1 it flagged 2.5% of the digits
#: by itself; the digit-shape model catches most photos it lets by).
MIN_INK = 0.03  # share of output pixels above 0.4 below which a scan counts as blank
MAX_MIDTONES = 1.5  # mid-tone pixels per inked pixel above which it looks like a photo
#: Share of the whole scan in mid tones above which it looks like a photo: at most 0.16 of
#: 2,000 MNIST test digits' outputs at noise 0.6, half of photo-like patches' above 0.24.
MAX_MID_SHARE = 0.3


def renoised(mapped: np.ndarray, output: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray]:
    """The scan's noise level and its output with fresh noise of that level: the input of
    the check pass whose output :func:`estimated_psnr` takes."""
    sigmas, inputs = renoised_many([mapped], [output], seed=seed)
    return sigmas[0], inputs[0]


def renoised_many(mapped: list[np.ndarray], outputs: list[np.ndarray],
                  seed: int = 0) -> tuple[list[float], list[np.ndarray]]:
    """:func:`renoised` for each scan (the same noise for every scan of one size)."""
    sigmas = [clipped_noise_level(m, out) for m, out in zip(mapped, outputs, strict=True)]
    noises: dict[tuple[int, ...], np.ndarray] = {}
    inputs = []
    for sigma, out in zip(sigmas, outputs, strict=True):
        if out.shape not in noises:
            noises[out.shape] = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
        inputs.append(np.clip(out + sigma * noises[out.shape], 0, 1).astype(np.float32))
    return sigmas, inputs


def _band(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images band-passed at the scale of strokes: 3x3 less 11x11 means."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]

    def mean(k: int) -> torch.Tensor:
        pad = min(k // 2, x.shape[-1] - 1, x.shape[-2] - 1)
        return F.avg_pool2d(F.pad(x, (pad,) * 4, mode="reflect"), 2 * pad + 1, 1)

    return (mean(3) - mean(11))[:, 0].numpy()


def estimated_mse(mapped: np.ndarray, output: np.ndarray, recheck: np.ndarray, sigma: float) -> float:
    """Estimated mean squared error of ``output`` in the model's look (``recheck``: the model's
    output for :func:`renoised`'s input)."""
    return float(_estimated_mses(mapped[None], output[None], recheck[None], np.array([sigma]))[0])


def _estimated_mses(mapped: np.ndarray, outputs: np.ndarray, rechecks: np.ndarray,
                    sigmas: np.ndarray) -> np.ndarray:
    """:func:`estimated_mse` of (N, H, W) scans of one size at once."""
    model_error = np.mean((rechecks - outputs) ** 2, axis=(1, 2), dtype=np.float64)
    mean, variance = clipped_moments(torch.from_numpy(np.asarray(outputs, np.float32)),
                                     torch.from_numpy(np.asarray(sigmas, np.float32)).view(-1, 1, 1))
    residual = mapped - mean.numpy()
    noise_part = variance.double().mean(dim=(1, 2)).numpy() * BAND_NOISE
    lost = np.mean(_band(residual) ** 2, axis=(1, 2), dtype=np.float64) - noise_part * (1 + BAND_SLACK)
    return model_error + np.maximum(lost, 0.0) / BAND_DIGIT


def estimated_psnr(mapped: np.ndarray, output: np.ndarray, recheck: np.ndarray, sigma: float, *,
                   paper: float, ink: float) -> float:
    """Estimated PSNR (dB) of the cleaned scan at its own contrast (``ink - paper``)."""
    return _to_db(estimated_mse(mapped, output, recheck, sigma) * (ink - paper) ** 2)


def _to_db(mse: float) -> float:
    return MAX_DB if mse <= 10 ** (-MAX_DB / 10) else min(MAX_DB, -10 * math.log10(mse))


def ood_reason(output: np.ndarray, sigma: float, shape_score: float = math.nan,
               shape_limit: float = math.inf) -> str | None:
    """Why a scan is unlike the training digits, from its output in the model's look, its
    noise level and its digit-shape score (:meth:`denoiser.checks.shapes.ShapeModel.scores`; NaN:
    not judged); None when nothing is."""
    return _ood_reasons(output[None], [sigma], [shape_score], shape_limit)[0]


def photo_tones(outputs: np.ndarray) -> np.ndarray:
    """Whether each of (N, H, W) outputs (the model's look, one size) holds the spread of
    mid tones of a photo rather than ink on paper."""
    peak = outputs.max(axis=(1, 2), keepdims=True)
    inked = np.mean((outputs > 0.5 * peak) & (peak > 0), axis=(1, 2))
    mid_share = np.mean((outputs > 0.15) & (outputs < 0.55), axis=(1, 2))
    return (mid_share / np.maximum(inked, 1e-6) > MAX_MIDTONES) | (mid_share > MAX_MID_SHARE)


def _ood_reasons(outputs: np.ndarray, sigmas: list[float], shape_scores: list[float],
                 shape_limit: float) -> list[str | None]:
    """:func:`ood_reason` of (N, H, W) outputs of one size at once."""
    ink_share = np.mean(outputs > 0.4, axis=(1, 2))
    photo = photo_tones(outputs)
    reasons: list[str | None] = []
    for k, sigma in enumerate(sigmas):
        if ink_share[k] < MIN_INK:
            reasons.append("blank: no ink found")
        elif sigma > NOISE_LIMIT:
            reasons.append(f"noise {sigma:.2f} beyond the trained range ({NOISE_LIMIT})")
        elif photo[k]:
            reasons.append("tones of a photo, not ink on paper")
        elif shape_scores[k] > shape_limit:  # NaN (not judged) is never above
            reasons.append(f"not a digit's shape (p {shape_scores[k]:.2f} above {shape_limit:.2f})")
        else:
            reasons.append(None)
    return reasons


def assess(mapped: list[np.ndarray], outputs: list[np.ndarray], rechecks: list[np.ndarray],
           sigmas: list[float], contrasts: list[float], shape_scores: list[float] | None = None,
           shape_limit: float = math.inf, look_dbs: list[float] | None = None) -> list[dict[str, Any]]:
    """The quality columns of each cleaned scan's report row (``noise_level``, ``psnr_est``,
    ``ood``, ``ood_reason``), scans of one size computed together. ``contrasts``: each
    scan's ``ink - paper``; ``shape_scores``: each output's digit-shape score (None: no
    shape model), flagged above ``shape_limit``; ``look_dbs``: each scan's learned PSNR
    estimate in the model's look (:mod:`denoiser.checks.quality_net`; NaN or None: the analytic
    estimate here)."""
    scores = list(shape_scores) if shape_scores is not None else [math.nan] * len(outputs)
    rows: list[dict[str, Any] | None] = [None] * len(outputs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, out in enumerate(outputs):
        groups.setdefault(out.shape, []).append(i)
    for indices in groups.values():
        stack = lambda items: np.stack([items[i] for i in indices])  # noqa: E731
        group_sigmas = [sigmas[i] for i in indices]
        mses = _estimated_mses(stack(mapped), stack(outputs), stack(rechecks), np.array(group_sigmas))
        reasons = _ood_reasons(stack(outputs), group_sigmas, [scores[i] for i in indices], shape_limit)
        for k, i in enumerate(indices):
            learned = look_dbs[i] if look_dbs is not None else math.nan
            estimate = (_to_db(float(mses[k]) * contrasts[i] ** 2) if math.isnan(learned)
                        else min(MAX_DB, learned - 20 * math.log10(max(abs(contrasts[i]), 1e-3))))
            measured = noise_measured(mapped[i], outputs[i])  # else too little paper: unknown, not 0
            rows[i] = {"noise_level": sigmas[i] if measured else math.nan, "psnr_est": estimate,
                       "ood": reasons[k] is not None, "ood_reason": reasons[k]}
    return rows  # type: ignore[return-value]
