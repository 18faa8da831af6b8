"""A learned PSNR estimate: a small network that has seen a cleaning model's errors.

The estimate of :mod:`denoiser.quality` is derived from the noise alone, and it cannot see
what blur, JPEG or dust did to a scan: over the scan test set it missed the true PSNR by
3.1 dB on average. This module learns the answer instead, for one cleaning model: MNIST's
training digits are degraded by a wide mix of the scan degradations
(:data:`QUALITY_MIX`: tones, scale, texture, lighting, blur, noise, dust, JPEG, each over a
wider range than the scan recipe's), cleaned exactly as ``clean`` cleans them
(:func:`denoiser.scan_batch.clean_batch`), and a small convolutional network (three levels of
3x3 convolutions, 16, 32 and 64 channels, mean and max pooled, with the scan's noise level and contrast)
learns each output's true PSNR from what the report has at hand: the scan in the model's
look, the output, and the check pass's output. It never sees the scan test set.

The estimate is in the model's look (paper 0, ink 1); :func:`denoiser.quality.assess`
brings it to the scan's own contrast. Only digit-sized scans (:data:`MAX_SIDE` in the
model's look) are judged by it: the analytic estimate stays for pages.

    weights = ensure_quality(models_dir, cleaner=checkpoint)  # models_dir/quality/<model id>.pt, .json
    look_db = load_quality(weights).look_db(mapped, outputs, rechecks, sigmas, contrasts)
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from denoiser import degrade
from denoiser.arrays import to_float
from denoiser.checkpoint import Checkpoint, load_model, load_weights, save_weights
from denoiser.data import load_dataset
from denoiser.files import read_json
from denoiser.metrics import psnr
from denoiser.precision import FP32, Precision, autocast, resolve_precision
from denoiser.quality import MAX_DB
from denoiser.restore import by_shape, model_headroom
from denoiser.scan_batch import clean_batch

log = logging.getLogger(__name__)

FOLDER = "quality"
VERSION = 2  # part of the stored metadata: bump when a change alters what training produces
MAX_SIDE = 56  # larger scans in the model's look (pages) keep the analytic estimate
#: The degradations the estimate learns from: the scan recipe's mix with dust, lighting,
#: blur and JPEG more often, and (through :meth:`Degradation.scaled`) every strength from
#: 0.6 to 1.6 times the recipe's, so that kinds and strengths nobody tuned it on are inside
#: what it has seen.
QUALITY_MIX = replace(degrade.SCAN, p_pure=0.3, p_dust=0.35, dust=(0.002, 0.06), p_lighting=0.35,
                      p_jpeg=0.35, p_blur=0.45)
GAUSSIAN_SHARE = 0.2  # of the batches: MNIST's look with clipped Gaussian noise of 0.05-0.7
#: Of the other batches, the share with one component alone (and light noise): in the mix,
#: a strong blur or lighting change nearly always comes with other harm, and the estimate
#: could not tell what each one costs.
SINGLE_SHARE = 0.3
_COMPONENTS = ("p_texture", "p_lighting", "p_blur", "p_dust", "p_jpeg")
#: Of those, the share in an office scan's tones (dark ink on near-white paper, high
#: contrast): what most real scans are, and where uneven lighting does the most harm.
OFFICE_SHARE = 0.5
BATCH = 250  # scans per cleaning batch while collecting


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
        :data:`MAX_SIDE`: not judged). Arguments as :func:`denoiser.quality.assess` takes them;
        ``precision``: the convolutions' (the CPU's, as the cleaning model's)."""
        result = np.full(len(outputs), np.nan)
        with torch.inference_mode(), autocast("cpu", precision):
            for indices in _by_shape(outputs).values():
                for start in range(0, len(indices), batch):
                    part = indices[start : start + batch]
                    inputs = _inputs(mapped, outputs, rechecks, sigmas, contrasts, part)
                    result[part] = self.net(*inputs).numpy()
        return np.minimum(result, MAX_DB)


class Recorder:
    """Stands in for an estimator inside ``clean_batch`` and keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def look_db(self, *arguments: list, **options: Any) -> np.ndarray:
        self.seen.append(arguments)
        return np.full(len(arguments[1]), np.nan)


def training_scans(digits: np.ndarray, rng: np.random.Generator,
                   generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One batch of ``(truth, degraded)`` scans of float digits, drawn from the mix."""
    clean = torch.from_numpy(to_float(digits))
    if rng.random() < GAUSSIAN_SHARE:
        noisy = clean.numpy() + float(rng.uniform(0.05, 0.7)) * rng.standard_normal(clean.shape)
        return clean.numpy(), np.clip(noisy, 0, 1).astype(np.float32)
    scale = 1.0 if rng.random() < 0.6 else float(rng.uniform(1.5, 4.0))
    spec = QUALITY_MIX.scaled(float(rng.uniform(0.6, 1.6)))
    if rng.random() < SINGLE_SHARE:
        alone = str(rng.choice(_COMPONENTS))
        spec = replace(spec, **{c: float(c == alone) for c in _COMPONENTS}, p_second_noise=0.0, p_noise=1.0,
                       noise=(0.02, 0.15))
        if rng.random() < OFFICE_SHARE:
            spec = replace(spec, dark_ink=1.0, p_pure=0.0, paper=(0.0, 0.1), contrast=(0.7, 1.0))
    truth, degraded = degrade.degrade(clean, spec, rng=generator, scale=scale)
    return truth.numpy(), degraded.numpy()


def collect(cleaner: torch.nn.Module, headroom: float, digits: np.ndarray, samples: int, *, seed: int = 0,
            precision: Precision = FP32) -> list[dict]:
    """Training examples: ``samples`` degraded digits cleaned as ``clean`` cleans them, each
    with its output's true PSNR at the scan's contrast."""
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for _ in range(max(1, samples // BATCH)):
        truth, noisy = training_scans(digits[rng.integers(0, len(digits), BATCH)], rng, generator)
        recorder = Recorder()
        results = clean_batch(cleaner, list(noisy), headroom=headroom, precision=precision,
                              quality_model=recorder)
        mapped, outputs, rechecks, sigmas, contrasts = recorder.seen[0]
        for k, (t, r) in enumerate(zip(truth, results, strict=True)):
            if isinstance(r, Exception) or max(outputs[k].shape) > MAX_SIDE:
                continue
            look = float(psnr(t[None], r.pixels[None])[0]) + 20 * math.log10(max(abs(contrasts[k]), 1e-3))
            rows.append({"mapped": mapped[k], "output": outputs[k], "recheck": rechecks[k],
                         "sigma": sigmas[k], "contrast": contrasts[k], "target": min(MAX_DB, look)})
    return rows


def train_quality(cleaner: torch.nn.Module, headroom: float, digits: np.ndarray, *, samples: int = 40000,
                  epochs: int = 12, seed: int = 0, precision: Precision = FP32) -> QualityEstimator:
    """A :class:`QualityEstimator` for ``cleaner``, trained on its own outputs of ``digits``
    (uint8) degraded by :data:`QUALITY_MIX` (about 6 minutes on 2 CPU cores)."""
    started = time.perf_counter()
    rows = collect(cleaner, headroom, digits, samples, seed=seed, precision=precision)
    collected = time.perf_counter() - started
    columns = {k: [r[k] for r in rows] for k in ("mapped", "output", "recheck", "sigma", "contrast")}
    groups = []
    for indices in _by_shape(columns["output"]).values():
        images, scalars = _inputs(columns["mapped"], columns["output"], columns["recheck"], columns["sigma"],
                                  columns["contrast"], indices)
        groups.append((images, scalars, torch.tensor([rows[i]["target"] for i in indices])))
    torch.manual_seed(seed)
    net = QualityNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = sum(math.ceil(len(g[2]) / 128) for g in groups) * epochs
    cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    for _ in range(epochs):
        for images, scalars, targets in groups:
            order = torch.randperm(len(targets))
            for start in range(0, len(order), 128):
                pick = order[start : start + 128]
                loss = F.smooth_l1_loss(net(images[pick], scalars[pick]), targets[pick])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    metadata = {"version": VERSION, "samples": len(rows), "epochs": epochs, "seed": seed,
                "collect_seconds": round(collected, 1), "seconds": round(time.perf_counter() - started, 1)}
    return QualityEstimator(net, metadata)


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


def ensure_quality(models_dir: str | os.PathLike[str], cleaner: Checkpoint,
                   data_dir: str | os.PathLike[str] | None = None, *, download: bool = True,
                   retrain: bool = False) -> Path:
    """The stored estimator for cleaning model ``cleaner``, trained first if the store lacks
    one. Raises :class:`denoiser.data.DataError` when MNIST cannot be had."""
    found = None if retrain else find_quality(models_dir, cleaner.model_id)
    if found is not None:
        return found
    mnist = load_dataset(data_dir, download=download)
    log.info("training the quality estimate for %s on its outputs of degraded training digits "
             "(about 6 minutes on 2 CPU cores)", cleaner.model_id)
    estimator = train_quality(load_model(cleaner), model_headroom(cleaner.metadata), mnist.train_images,
                              precision=resolve_precision("auto", torch.device("cpu")))  # as clean runs it
    weights = save_quality(estimator, models_dir, cleaner.model_id)
    log.info("quality estimate for %s: trained on %d scans in %.0f s", cleaner.model_id,
             estimator.metadata["samples"], estimator.metadata["seconds"])
    return weights
