"""A learned PSNR estimate: a small network that has seen a cleaning model's errors.

The estimate of :mod:`denoiser.checks.quality` is derived from the noise alone, and it cannot see
what blur, JPEG or dust did to a scan: over the scan test set it missed the true PSNR by
3.1 dB on average. This module learns the answer instead, for one cleaning model: MNIST's
training digits are degraded by a wide mix of the scan degradations
(:data:`QUALITY_MIX`: tones, scale, texture, lighting, blur, noise, dust, JPEG, each over a
wider range than the scan recipe's), cleaned exactly as ``clean`` cleans them
(:func:`denoiser.scans.batch.clean_batch`), and a small convolutional network (three levels of
3x3 convolutions, 16, 32 and 64 channels, mean and max pooled, with the scan's noise level and contrast)
learns each output's true PSNR from what the report has at hand: the scan in the model's
look, the output, and the check pass's output. It never sees the scan test set.

The estimate is in the model's look (paper 0, ink 1); :func:`denoiser.checks.quality.assess`
brings it to the scan's own contrast. Only digit-sized scans (:data:`MAX_SIDE` in the
model's look) are judged by it: the analytic estimate stays for pages.

    weights = find_quality(models_dir, model_id)     # trained by denoiser.training.quality
    look_db = load_quality(weights).look_db(mapped, outputs, rechecks, sigmas, contrasts)
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from denoiser.checks.quality import MAX_DB
from denoiser.data.arrays import by_shape
from denoiser.files import read_json
from denoiser.models.checkpoint import load_weights, save_weights
from denoiser.models.precision import FP32, Precision, autocast

log = logging.getLogger(__name__)

FOLDER = "quality"
VERSION = 3  # part of the stored metadata: bump when a change alters what training produces
MAX_SIDE = 56  # larger scans in the model's look (pages) keep the analytic estimate


class QualityNet(nn.Module):
    """(scan, output, check output, scan - output) -> PSNR in the model's look, in dB.

    Three levels of two 3x3 convolutions (16, 32 and 64 channels; at 28x28, 14x14 and 7x7 for
    an MNIST-sized scan), each of the last two levels mean and max pooled over the image, with
    the scan's noise level and contrast. The third level sees most of a digit at once: with
    it the error over the scan test set fell from 1.37 to 1.23 dB, most on uneven lighting,
    a change across the whole page (1.95 -> 1.42 dB).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.c1, self.c2 = nn.Conv2d(4, w, 3, padding=1), nn.Conv2d(w, w, 3, padding=1)
        self.c3, self.c4 = nn.Conv2d(w, 2 * w, 3, padding=1), nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.c5, self.c6 = nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.Conv2d(4 * w, 4 * w, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(12 * w + 2, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, images: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images, images[:, :1] - images[:, 1:2]], 1)
        h = F.relu(self.c2(F.relu(self.c1(x))))
        h = F.relu(self.c4(F.relu(self.c3(F.max_pool2d(h, 2, ceil_mode=True)))))
        g = F.relu(self.c6(F.relu(self.c5(F.max_pool2d(h, 2, ceil_mode=True)))))
        h, g = h.float(), g.float()
        with torch.autocast(h.device.type, enabled=False):  # the answer in float32, the convolutions in any
            pooled = [h.mean((2, 3)), h.amax((2, 3)), g.mean((2, 3)), g.amax((2, 3)), scalars]
            return self.head(torch.cat(pooled, 1))[:, 0] + 22.0


def _inputs(mapped: list, outputs: list, rechecks: list, sigmas: list, contrasts: list,
            indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([np.stack([mapped[i], outputs[i], rechecks[i]]) for i in indices]).astype(np.float32)
    scalars = [[sigmas[i], math.log10(max(abs(contrasts[i]), 1e-3))] for i in indices]
    return torch.from_numpy(images), torch.tensor(scalars, dtype=torch.float32)


def _by_shape(outputs: list) -> dict[tuple[int, ...], list[int]]:
    """Indices of the digit-sized outputs, by size."""
    return {shape: indices for shape, indices in by_shape(outputs).items() if max(shape) <= MAX_SIDE}


class QualityEstimator:
    """A trained :class:`QualityNet` and what it was trained for (``metadata``)."""

    def __init__(self, net: QualityNet, metadata: dict[str, Any]) -> None:
        self.net, self.metadata = net.eval().to(memory_format=torch.channels_last), metadata

    def look_db(self, mapped: list, outputs: list, rechecks: list, sigmas: list, contrasts: list,
                batch: int = 512, precision: Precision = FP32) -> np.ndarray:
        """Each scan's estimated PSNR in the model's look (NaN for a scan larger than
        :data:`MAX_SIDE`: not judged). Arguments as :func:`denoiser.checks.quality.assess` takes them;
        ``precision``: the convolutions' (the CPU's, as the cleaning model's)."""
        result = np.full(len(outputs), np.nan)
        with torch.inference_mode(), autocast("cpu", precision):
            for indices in _by_shape(outputs).values():
                for start in range(0, len(indices), batch):
                    part = indices[start : start + batch]
                    inputs = _inputs(mapped, outputs, rechecks, sigmas, contrasts, part)
                    result[part] = self.net(*inputs).numpy()
        return np.minimum(result, MAX_DB)


def quality_path(models_dir: str | os.PathLike[str], model_id: str) -> Path:
    """Where the estimator for cleaning model ``model_id`` is kept."""
    return Path(models_dir) / FOLDER / f"{model_id}.pt"


def save_quality(estimator: QualityEstimator, models_dir: str | os.PathLike[str], model_id: str) -> Path:
    """Write ``models_dir/quality/<model_id>.pt`` (a state dict) then its ``.json``, each atomically."""
    return save_weights(estimator.net, quality_path(models_dir, model_id), {"model_id": model_id,
                                                                           **estimator.metadata})


def find_quality(models_dir: str | os.PathLike[str], model_id: str) -> Path | None:
    """The stored estimator for ``model_id`` of this version, or None."""
    weights = quality_path(models_dir, model_id)
    meta = weights.with_suffix(".json")
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        return weights if read_json(meta).get("version") == VERSION else None
    except ValueError:
        return None


def load_quality(weights: str | os.PathLike[str]) -> QualityEstimator:
    """The estimator stored at ``weights`` (read with ``weights_only=True``: no pickled code runs)."""
    net = QualityNet()
    return QualityEstimator(net, load_weights(net, weights, "a quality estimator"))


