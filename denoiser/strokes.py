"""Stroke width: how much larger than MNIST's a scan's handwriting is.

The models work at MNIST's pixel scale (strokes about 2.4 px wide, measured as below on
the MNIST test set). A 300-dpi scan of a digit has strokes 3-10x wider; the cleaner
shrinks such a scan to MNIST's stroke width, cleans it, and enlarges the result back
(:mod:`denoiser.restore`).

The width comes from the image's autocorrelation: strokes of width w make it fall to half
of its value at lag 1 at a lag proportional to w, whatever their shape. White noise adds
only to lag 0, which is left out, so the estimate holds under heavy noise where
thresholding the image would not. A fitted plane is taken out first, so that uneven
lighting does not read as wide strokes.
"""

from __future__ import annotations

import numpy as np

#: Median width (px) this estimator gives on clean MNIST test digits; their scale is 1.
MNIST_STROKE_WIDTH = 2.4
_MAX_SIDE = 512  # larger images are averaged down first (the width scales with them)


def stroke_width(image: np.ndarray) -> float:
    """The characteristic stroke width (px) of a (H, W) image with ink high, paper low."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {x.shape}")
    factor = int(np.ceil(max(x.shape) / _MAX_SIDE))
    if factor > 1:
        h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
        x = x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    h, w = x.shape
    if min(h, w) < 6:
        return MNIST_STROKE_WIDTH * factor
    x = _flatten_lighting(x)
    spectrum = np.fft.rfft2(x, s=(2 * h, 2 * w))
    acf = np.fft.irfft2(np.abs(spectrum) ** 2, s=(2 * h, 2 * w))
    lags = np.arange(1, min(h, w) // 2)
    profile = (acf[lags, 0] + acf[0, lags] + acf[-lags, 0] + acf[0, -lags]) / 4
    if profile[0] <= 0:  # no structure at all (a flat image)
        return MNIST_STROKE_WIDTH * factor
    half = 0.5 * profile[0]
    below = np.nonzero(profile < half)[0]
    if len(below) == 0:
        return float(lags[-1]) * factor
    j = int(below[0])
    if j == 0:
        return 1.0 * factor
    before, after = profile[j - 1], profile[j]
    return float(j + (before - half) / (before - after)) * factor


def _flatten_lighting(x: np.ndarray) -> np.ndarray:
    """``x`` less its least-squares plane: uneven lighting would read as very wide strokes."""
    h, w = x.shape
    ys, xs = np.mgrid[0:h, 0:w]
    basis = np.stack([np.ones(h * w), ys.ravel() / h, xs.ravel() / w], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, x.ravel(), rcond=None)
    return x - (basis @ coefficients).reshape(h, w)


def stroke_scale(image: np.ndarray) -> float:
    """How many times wider than MNIST's the strokes of ``image`` are (1 = MNIST's scale)."""
    return stroke_width(image) / MNIST_STROKE_WIDTH
