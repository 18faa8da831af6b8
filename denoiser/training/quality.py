"""Training the learned PSNR estimate (:mod:`denoiser.checks.quality_net`) for one
cleaning model: MNIST's training digits are degraded by a wide mix of the scan degradations
(:data:`QUALITY_MIX`: tones, scale, texture, lighting, blur, noise, dust, JPEG, each over a
wider range than the scan recipe's), cleaned exactly as ``clean`` cleans them
(:func:`denoiser.scans.batch.clean_batch`), and the network learns each output's true PSNR.
It never sees the scan test set.

    weights = ensure_quality(models_dir, cleaner=checkpoint)  # models_dir/quality/<model id>.pt, .json
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.checks.quality import MAX_DB
from denoiser.checks.quality_net import (
    MAX_SIDE,
    VERSION,
    QualityEstimator,
    QualityNet,
    _by_shape,
    _inputs,
    find_quality,
    save_quality,
)
from denoiser.data.arrays import to_float
from denoiser.data.mnist import load_dataset
from denoiser.metrics import psnr
from denoiser.models.checkpoint import Checkpoint, load_model
from denoiser.models.precision import FP32, Precision, autocast, resolve_precision
from denoiser.noise import degrade
from denoiser.scans import restore
from denoiser.scans.batch import clean_batch

log = logging.getLogger(__name__)

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
#: Models like those adapted from the cleaner (:func:`variant`: a copy fine-tuned on one kind of
#: harm alone), whose outputs the estimate learns beside the cleaner's own: trained on the
#: cleaner's outputs alone, it learnt the cleaner's habits as facts about the scan (the cleaner
#: leaves dust, so a dusty scan scored low whatever the output), and judged models adapted to
#: dust and to uneven lighting 0.3 and 1.5 dB worse than their parent where they were 4.0 and
#: 5.2 dB better (docs/LOG.md, 2026-12-07, seventh session).
VARIANTS = ("gaussian", *_COMPONENTS)
VARIANT_STEPS = 200  # each variant's fine-tuning steps (batch 64)
VARIANT_SHARE = 0.4  # of the batches collected, cleaned by a variant
VARIANT_INK_WEIGHT = 2.0  # ink weighs this much more than paper in their loss, as adapting's (AdaptConfig.ink_weight)


class Recorder:
    """Stands in for an estimator inside ``clean_batch`` and keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def look_db(self, *arguments: list, **options: Any) -> np.ndarray:
        self.seen.append(arguments)
        return np.full(len(arguments[1]), np.nan)


def training_scans(digits: np.ndarray, rng: np.random.Generator, generator: torch.Generator,
                   alone: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One batch of ``(truth, degraded)`` scans of float digits, drawn from the mix, or with one
    of :data:`VARIANTS` alone (``alone``: white noise in MNIST's look, or one component with
    light noise, at MNIST's scale)."""
    clean = torch.from_numpy(to_float(digits))
    if alone == "gaussian" or (alone is None and rng.random() < GAUSSIAN_SHARE):
        noisy = clean.numpy() + float(rng.uniform(0.05, 0.7)) * rng.standard_normal(clean.shape)
        return clean.numpy(), np.clip(noisy, 0, 1).astype(np.float32)
    scale = 1.0 if alone is not None or rng.random() < 0.6 else float(rng.uniform(1.5, 4.0))
    spec = QUALITY_MIX.scaled(float(rng.uniform(0.6, 1.6)))
    if alone is not None or rng.random() < SINGLE_SHARE:
        alone = alone or str(rng.choice(_COMPONENTS))
        spec = replace(spec, **{c: float(c == alone) for c in _COMPONENTS}, p_second_noise=0.0, p_noise=1.0,
                       noise=(0.02, 0.15))
        if rng.random() < OFFICE_SHARE:
            spec = replace(spec, dark_ink=1.0, p_pure=0.0, paper=(0.0, 0.1), contrast=(0.7, 1.0))
    truth, degraded = degrade.degrade(clean, spec, rng=generator, scale=scale)
    return truth.numpy(), degraded.numpy()


def variant(cleaner: torch.nn.Module, headroom: float, digits: np.ndarray, alone: str, *, steps: int,
            seed: int = 0, precision: Precision = FP32) -> torch.nn.Module:
    """A copy of ``cleaner`` fine-tuned for ``steps`` steps (batch 64, Adam 1e-3, the loss adapting
    uses) on scans with ``alone`` (one of :data:`VARIANTS`) alone, shown to it as ``clean`` shows
    them: a model like one adapted to a folder of that kind."""
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    model = copy.deepcopy(cleaner).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        truth, noisy = training_scans(digits[rng.integers(0, len(digits), 64)], rng, generator, alone=alone)
        inputs, targets = restore.in_model_look(list(truth), list(noisy), headroom, rescale=False)
        target = torch.from_numpy(np.stack(targets))[:, None]
        with autocast("cpu", precision):
            logits = model(torch.from_numpy(np.stack(inputs))[:, None])
        loss = F.binary_cross_entropy_with_logits(logits.float(), target, weight=1 + VARIANT_INK_WEIGHT * target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def collect(cleaner: torch.nn.Module, headroom: float, digits: np.ndarray, samples: int, *, seed: int = 0,
            precision: Precision = FP32, variants: dict[str, torch.nn.Module] | None = None) -> list[dict]:
    """Training examples: ``samples`` degraded digits cleaned as ``clean`` cleans them, each
    with its output's true PSNR at the scan's contrast. With ``variants`` (:func:`variant` by
    the kind each was fine-tuned on), a :data:`VARIANT_SHARE` of the batches is cleaned by one
    of them instead, half of those with its own kind alone."""
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    names = sorted(variants or {})
    rows: list[dict] = []
    for _ in range(max(1, samples // BATCH)):
        model, alone = cleaner, None
        if names and rng.random() < VARIANT_SHARE:
            name = names[int(rng.integers(0, len(names)))]
            model = variants[name]
            alone = name if rng.random() < 0.5 else None  # else the whole mix, as the cleaner's batches
        truth, noisy = training_scans(digits[rng.integers(0, len(digits), BATCH)], rng, generator, alone=alone)
        recorder = Recorder()
        results = clean_batch(model, list(noisy), headroom=headroom, precision=precision,
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
                  epochs: int = 12, seed: int = 0, precision: Precision = FP32,
                  variant_steps: int = VARIANT_STEPS) -> QualityEstimator:
    """A :class:`QualityEstimator` for ``cleaner``, trained on its own outputs of ``digits``
    (uint8) degraded by :data:`QUALITY_MIX`, and on those of its :data:`VARIANTS`, each
    fine-tuned for ``variant_steps`` (0: none) (about 7.5 minutes on 2 CPU cores)."""
    started = time.perf_counter()
    variants = {alone: variant(cleaner, headroom, digits, alone, steps=variant_steps, seed=seed + k,
                               precision=precision) for k, alone in enumerate(VARIANTS)} if variant_steps else None
    tuned = time.perf_counter() - started
    rows = collect(cleaner, headroom, digits, samples, seed=seed, precision=precision, variants=variants)
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
                "variants": sorted(variants or {}), "variant_steps": variant_steps, "variant_seconds": round(tuned, 1),
                "collect_seconds": round(collected, 1), "seconds": round(time.perf_counter() - started, 1)}
    return QualityEstimator(net, metadata)


def ensure_quality(models_dir: str | os.PathLike[str], cleaner: Checkpoint,
                   data_dir: str | os.PathLike[str] | None = None, *, download: bool = True,
                   retrain: bool = False) -> Path:
    """The stored estimator for cleaning model ``cleaner``, trained first if the store lacks
    one. Raises :class:`denoiser.data.mnist.DataError` when MNIST cannot be had."""
    found = None if retrain else find_quality(models_dir, cleaner.model_id)
    if found is not None:
        return found
    mnist = load_dataset(data_dir, download=download)
    log.info("training the quality estimate for %s on its outputs of degraded training digits "
             "(about 7.5 minutes on 2 CPU cores)", cleaner.model_id)
    estimator = train_quality(load_model(cleaner), restore.model_headroom(cleaner.metadata), mnist.train_images,
                              precision=resolve_precision("auto", torch.device("cpu")))  # as clean runs it
    weights = save_quality(estimator, models_dir, cleaner.model_id)
    log.info("quality estimate for %s: trained on %d scans in %.0f s", cleaner.model_id,
             estimator.metadata["samples"], estimator.metadata["seconds"])
    return weights
