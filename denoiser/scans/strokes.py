"""Stroke width: how much larger than MNIST's a scan's handwriting is.

The models work at MNIST's pixel scale (strokes about 2.4 px wide, measured as below on
the MNIST test set). A 300-dpi scan of a digit has strokes 3-10x wider; the cleaner
shrinks such a scan to MNIST's stroke width, cleans it, and enlarges the result back
(:mod:`denoiser.scans.restore`).

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


#: Scans at this many times MNIST's scale or more are shrunk to it before the model sees
#: them (the cleaner's rule: :data:`denoiser.scans.restore.RESCALE_ABOVE`; training shrinks its scans by the same rule).
SHRINK_ABOVE = 1.5


def stroke_width(image: np.ndarray) -> float:
    """The characteristic stroke width (px) of a (H, W) image with ink high, paper low."""
    x = np.asarray(image)
    if x.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {x.shape}")
    return float(stroke_widths(x[None])[0])


def stroke_widths(images: np.ndarray) -> np.ndarray:
    """:func:`stroke_width` of each of (N, H, W) images of one size, in one vectorized pass
    (what a batch of 28x28 scans costs is then the FFT, not Python's per-image overhead)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {x.shape}")
    factor = int(np.ceil(max(x.shape[1:]) / _MAX_SIDE))
    if factor > 1:
        n, h, w = x.shape[0], (x.shape[1] // factor) * factor, (x.shape[2] // factor) * factor
        x = x[:, :h, :w].reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    n, h, w = x.shape
    widths = np.full(n, MNIST_STROKE_WIDTH * factor)
    if min(h, w) < 6 or n == 0:
        return widths
    x = _flatten_lighting(x)
    spectrum = np.fft.rfft2(x, s=(2 * h, 2 * w))
    acf = np.fft.irfft2(np.abs(spectrum) ** 2, s=(2 * h, 2 * w))
    lags = np.arange(1, min(h, w) // 2)
    profile = (acf[:, lags, 0] + acf[:, 0, lags] + acf[:, -lags, 0] + acf[:, 0, -lags]) / 4
    for i in range(n):  # a handful of scalar steps per image
        first = profile[i, 0]
        if first <= 0:  # no structure at all (a flat image)
            continue
        half = 0.5 * first
        below = np.flatnonzero(profile[i] < half)
        if len(below) == 0:
            widths[i] = float(lags[-1]) * factor
            continue
        j = int(below[0])
        if j == 0:
            widths[i] = 1.0 * factor
            continue
        before, after = profile[i, j - 1], profile[i, j]
        widths[i] = float(j + (before - half) / (before - after)) * factor
    return widths


def _flatten_lighting(x: np.ndarray) -> np.ndarray:
    """(N, H, W) images less each one's least-squares plane: uneven lighting would read as
    very wide strokes."""
    n, h, w = x.shape
    ys, xs = np.mgrid[0:h, 0:w]
    basis = np.stack([np.ones(h * w), ys.ravel() / h, xs.ravel() / w], axis=1)
    coefficients = np.linalg.pinv(basis) @ x.reshape(n, h * w).T  # (3, N): every image's plane at once
    return x - (basis @ coefficients).T.reshape(n, h, w)


def stroke_scale(image: np.ndarray) -> float:
    """How many times wider than MNIST's the strokes of ``image`` are (1 = MNIST's scale)."""
    return stroke_width(image) / MNIST_STROKE_WIDTH
