"""Per-image quality metrics: MSE, PSNR, SSIM and BCE.

Every function takes ``(image_true, image_test)`` arrays of shape ``(N, H, W)`` (or one
``(H, W)`` image) with values in [0, data_range] and returns one float64 value per image.
Means over a set are taken of these per-image values, never per batch.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population (not sample) covariances, averaged over the positions where the
window lies wholly inside the image. This matches ``skimage.metrics.structural_similarity``
with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

BCE_EPS = 1e-7  # predictions are clamped to [eps, 1 - eps] so log(0) cannot occur


def _pair(image_true: np.ndarray, image_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(image_true, dtype=np.float64)
    b = np.asarray(image_test, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3:
        raise ValueError(f"expected (N, H, W) or (H, W) images, got shape {a.shape}")
    return a, b


def mse(image_true: np.ndarray, image_test: np.ndarray) -> np.ndarray:
    a, b = _pair(image_true, image_test)
    return ((a - b) ** 2).mean(axis=(1, 2))


def psnr(image_true: np.ndarray, image_test: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """10 log10(data_range^2 / MSE) per image; +inf for identical images."""
    error = mse(image_true, image_test)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / error)


def bce(image_true: np.ndarray, image_test: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy of ``image_test`` as a prediction of ``image_true`` (in [0, 1])."""
    a, b = _pair(image_true, image_test)
    p = np.clip(b, BCE_EPS, 1.0 - BCE_EPS)
    return -(a * np.log(p) + (1.0 - a) * np.log1p(-p)).mean(axis=(1, 2))


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return torch.outer(g, g)[None, None]


def ssim(
    image_true: np.ndarray,
    image_test: np.ndarray,
    *,
    data_range: float = 1.0,
    batch_size: int = 4096,
) -> np.ndarray:
    """Structural similarity per image (Gaussian window, see the module docstring)."""
    a, b = _pair(image_true, image_test)
    window = _gaussian_window()
    size = window.shape[-1]
    if min(a.shape[1:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {a.shape[1:]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.empty(len(a))
    for start in range(0, len(a), batch_size):
        x = torch.from_numpy(a[start : start + batch_size])[:, None]
        y = torch.from_numpy(b[start : start + batch_size])[:, None]
        mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
        var_x = F.conv2d(x * x, window) - mu_x**2
        var_y = F.conv2d(y * y, window) - mu_y**2
        cov = F.conv2d(x * y, window) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )
        out[start : start + len(x)] = s.mean(dim=(1, 2, 3)).numpy()
    return out


def noise_sigma(image: np.ndarray) -> float:
    """A robust estimate of the white-noise standard deviation of one (H, W) image.

    The median absolute value of the diagonal Haar detail (a high-pass residual in which
    smooth content cancels), divided by 0.6745: Donoho's wavelet estimator.
    """
    x = np.asarray(image)
    if x.ndim != 2:
        return float("nan")
    return float(noise_sigmas(x[None])[0])


#: Detail coefficients an image's noise estimate reads at most: larger images are read on
#: evenly spaced rows (the median of a million values is as good as of all of them, and
#: memory stays bounded however large the scan).
NOISE_SAMPLE = 2**20


def noise_sigmas(images: np.ndarray) -> np.ndarray:
    """:func:`noise_sigma` of each of (N, H, W) images of one size, at once."""
    x = np.asarray(images)
    if x.ndim != 3 or min(x.shape[1:]) < 2:
        return np.full(len(x), np.nan)
    n, h, w = x.shape
    step = max(1, -(-(h - 1) * (w - 1) // NOISE_SAMPLE))
    if step == 1:
        x = x.astype(np.float64, copy=False)
        detail = (x[:, 1:, 1:] - x[:, 1:, :-1] - x[:, :-1, 1:] + x[:, :-1, :-1]) / 2.0
        return np.median(np.abs(detail), axis=(1, 2)) / 0.6745
    rows = np.arange(0, h - 1, step)
    top, below = x[:, rows].astype(np.float64), x[:, rows + 1].astype(np.float64)
    detail = (below[:, :, 1:] - below[:, :, :-1] - top[:, :, 1:] + top[:, :, :-1]) / 2.0
    return np.median(np.abs(detail), axis=(1, 2)) / 0.6745
