"""Classical denoisers a user might pick instead of a trained model, with their tuning grids.

Each baseline denoises float ``(H, W)`` images in [0, 1] with one parameter, chosen on a
validation split by :func:`denoiser.evaluation.evaluate.tune`. They come from scikit-image (and SciPy,
which it installs), ``pip install .[baselines]``; BM3D only if the user installs ``bm3d``
(free for non-commercial use only). A baseline whose package is missing is reported as
unavailable, never an error.

Clipped noise is biased (``clip(0 + 0.5 * randn, 0, 1)`` averages 0.2, not 0), which no
smoothing removes, so each baseline's output also goes through a monotone tone curve fitted
on the validation split (:class:`ToneCurve`): the bias correction the models learn anyway.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BASELINES = ("gaussian", "median", "tv", "wavelet", "nlmeans", "bm3d")


@dataclass(frozen=True)
class Baseline:
    name: str
    parameter: str  # what the tuned value means
    grid: tuple[float, ...]
    needs: tuple[str, ...]  # importable modules
    denoise: Callable[[np.ndarray, float], np.ndarray]  # (H, W) image, parameter -> image

    def missing(self) -> list[str]:
        return [module for module in self.needs if importlib.util.find_spec(module) is None]


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=sigma, mode="reflect")


def _median(image: np.ndarray, size: float) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(image, size=int(size), mode="reflect")


def _tv(image: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(image, weight=weight)


def _wavelet(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(image, sigma=sigma, wavelet="db1", mode="soft", method="BayesShrink",
                           rescale_sigma=True)


def _nlmeans(image: np.ndarray, h: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(image, h=h, patch_size=3, patch_distance=4, fast_mode=True)


def _bm3d(image: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return np.asarray(bm3d.bm3d(image, sigma_psd=sigma), dtype=np.float64)


REGISTRY = {
    "gaussian": Baseline("gaussian", "sigma", (0.5, 0.75, 1.0, 1.25, 1.5, 2.0), ("scipy",), _gaussian),
    "median": Baseline("median", "size", (3, 5, 7), ("scipy",), _median),
    "tv": Baseline("tv", "weight", (0.05, 0.1, 0.2, 0.3, 0.5, 0.8), ("skimage",), _tv),
    "wavelet": Baseline("wavelet", "sigma", (0.1, 0.2, 0.3, 0.5, 0.7), ("skimage", "pywt"), _wavelet),
    "nlmeans": Baseline("nlmeans", "h", (0.1, 0.2, 0.3, 0.45, 0.6), ("skimage",), _nlmeans),
    "bm3d": Baseline("bm3d", "sigma", (0.2, 0.3, 0.4, 0.5, 0.6), ("bm3d",), _bm3d),
}


def get(name: str) -> Baseline:
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return REGISTRY[name]


def apply(baseline: Baseline, images: np.ndarray, value: float) -> np.ndarray:
    """Denoise float (N, H, W) images one by one with the parameter ``value``."""
    return np.stack([np.clip(baseline.denoise(image.astype(np.float64), value), 0, 1) for image in images])


class ToneCurve:
    """A monotone map from a denoiser's output value to the mean clean value, fitted on
    validation images: binned means, made non-decreasing, interpolated between bins."""

    def __init__(self, output: np.ndarray, clean: np.ndarray, bins: int = 32) -> None:
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(output.ravel(), edges) - 1, 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        sums = np.bincount(which, weights=clean.ravel(), minlength=bins)
        centres = np.bincount(which, weights=output.ravel(), minlength=bins)
        filled = counts > 0
        self.x = centres[filled] / counts[filled]
        self.y = np.maximum.accumulate(sums[filled] / counts[filled])

    def __call__(self, output: np.ndarray) -> np.ndarray:
        return np.interp(output, self.x, self.y)
