"""The train-or-load stage: the model a recipe names, loaded from the store, or trained on
the run's training images and stored with its metadata (recipe, data checksum, steps,
per-epoch history, precision)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from denoiser.choices import DEFAULT_MODELS_DIR
from denoiser.files import load_array
from denoiser.models import checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig, cut_short_id, finished, model_id_for, recipe_versions
from denoiser.noise.spec import NoiseSpec
from denoiser.pipeline.record import StageResult, record
from denoiser.scans import tones
from denoiser.training.loop import EpochStats, train

log = logging.getLogger(__name__)


def train_or_load(
    run_dir: str | os.PathLike[str],
    *,
    train_images: str,
    train_sha256: str,
    config: TrainConfig,
    models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
    device: str = "auto",
    precision: str = "auto",
    retrain: bool = False,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> StageResult:
    """Load the model this recipe names from the store, or train and store it.

    Only a model that finished the recipe is loaded as the recipe's. A run the time budget
    ends early stores its model under an id of its own (:func:`cut_short_id`) and uses it;
    the recipe's model is then trained again by the next run, which may have the time."""
    started, run_dir = time.perf_counter(), Path(run_dir)
    model_id = model_id_for(config, train_sha256)
    found = None if retrain else _finished(models_dir, config, train_sha256)
    if found is not None:
        log.info("loaded model %s from %s (recipe already trained)", found.model_id, found.weights)
        result = {"model_id": found.model_id, "recipe_model_id": model_id, "weights": str(found.weights),
                  "trained": False, "cut_short": False,
                  "precision": found.metadata.get("precision", "fp32")}  # trained in
        return record(run_dir, "train_or_load", result, started)

    torch_device = resolve_device(device)
    outcome = train(
        load_array(train_images),
        config,
        device=torch_device,
        precision=resolve_precision(precision, torch_device),
        on_epoch_end=on_epoch_end,
        on_progress=on_progress,
    )
    last = outcome.history[-1]
    cut = outcome.steps < outcome.planned_steps
    stored_id = cut_short_id(model_id, outcome.steps) if cut else model_id
    saved = checkpoint.save_checkpoint(
        models_dir,
        stored_id,
        outcome.model,
        {
            "architecture": config.model,
            "recipe_model_id": model_id,  # the id of the model that finishes this recipe
            "cut_short": cut,
            "config": config.to_dict(),
            **recipe_versions(config),
            "noise": config.noise,
            **({"tone_headroom": tones.HEADROOM} if NoiseSpec.parse(config.noise).kind == "scan" else {}),
            "data_sha256": train_sha256,
            "train_size": outcome.train_size,
            "val_size": outcome.val_size,
            "epochs": config.epochs,
            "steps": outcome.steps,  # fewer than planned_steps when the time budget ended the run
            "planned_steps": outcome.planned_steps,
            "device": str(torch_device),
            **outcome.precision.to_dict(),
            "train_seconds": round(outcome.seconds, 3),
            "final": {
                "train_loss": last.train_loss,
                "val_loss": last.val_loss,
                "val_psnr": last.val_psnr,
            },
            "history": [vars(stats) for stats in outcome.history],
        },
    )
    log.info("trained model %s in %.1f s, saved to %s", stored_id, outcome.seconds, saved.weights)
    if cut:
        log.warning("the time budget ended training after %d of the recipe's %d steps: the model is "
                    "stored as %s, not as the recipe's %s, which the next run with the time trains "
                    "(or now: --max-train-minutes 0)", outcome.steps, outcome.planned_steps, stored_id,
                    model_id)
    result = {"model_id": stored_id, "recipe_model_id": model_id, "weights": str(saved.weights),
              "trained": True, "cut_short": cut, "steps": outcome.steps,
              "planned_steps": outcome.planned_steps, "val_psnr": last.val_psnr,
              **outcome.precision.to_dict()}
    return record(run_dir, "train_or_load", result, started)


def _finished(models_dir: str | os.PathLike[str], config: TrainConfig,
              train_sha256: str) -> checkpoint.Checkpoint | None:
    """The stored model that finished this recipe: under its id, or under the id stores gave
    it before the time budget left the id (a model that budget cut short is not taken)."""
    for model_id in dict.fromkeys([model_id_for(config, train_sha256),
                                   model_id_for(config, train_sha256, legacy=True)]):
        found = checkpoint.find_checkpoint(models_dir, model_id)
        if found is not None and finished(found.metadata):
            return found
    return None


#: After the scan model, the first ``clean`` trains the digit-shape model and the quality
#: estimate: 2.1x the scan model's time on a 2-core Intel Xeon with AMX (488 s after 232 s),
#: 1.49x on a 2-core AMD EPYC with avx512_bf16 (519 s after 350 s), where the probe's pace
#: was 23% faster than the real epochs and the whole estimate came within 5% (14 against
#: 14.7 minutes; docs/LOG.md, 2026-12-06). Kept at the higher figure: a wait said too long
#: is better than one said too short. Since the estimate also learns its variants' outputs
#: (2026-12-07, seventh session) it takes 2.5 minutes more on that EPYC (438 s against 291):
#: 2.6 covers the AMX Xeon's 2.1 with them added.
CHECKS_FACTOR = 2.6


def probe_images_per_second(config: TrainConfig, *, device: str = "auto", precision: str = "auto") -> float:
    """The pace (images/s) at which ``config`` trains on this machine, from two short epochs of
    it on a few batches of synthetic strokes (about 2 s)."""
    import numpy as np

    rng = np.random.default_rng(0)
    digits = np.zeros((6 * config.batch_size, 28, 28), np.uint8)
    digits[:, 6:22, 12:16] = rng.integers(128, 256, (len(digits), 16, 4))  # a stroke each
    torch_device = resolve_device(device)
    probe = replace(config, epochs=2, train_limit=None, max_minutes=None, val_fraction=1 / 6)
    quiet = logging.getLogger("denoiser.training")  # the probe's epochs are not the user's training
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        outcome = train(digits, probe, device=torch_device, precision=resolve_precision(precision, torch_device),
                        show_progress=False)
    finally:
        quiet.setLevel(level)
    return outcome.history[-1].images_per_second


def estimate_training_seconds(config: TrainConfig, *, train_images: int = 54_000, device: str = "auto",
                              precision: str = "auto", with_checks: bool = True,
                              images_per_second: float | None = None) -> float:
    """How long training ``config`` on ``train_images`` images (MNIST's 60,000 less the
    validation tenth) takes on this machine, at ``images_per_second`` or else at the pace of
    :func:`probe_images_per_second`, plus the checks trained after it (:data:`CHECKS_FACTOR`)
    when ``with_checks``."""
    if images_per_second is None:
        images_per_second = probe_images_per_second(config, device=device, precision=precision)
    seconds = config.epochs * train_images / images_per_second
    return seconds * (1 + CHECKS_FACTOR if with_checks else 1)
