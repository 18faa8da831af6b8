"""The train-or-load stage: the model a recipe names, loaded from the store, or trained on
the run's training images and stored with its metadata (recipe, data checksum, steps,
per-epoch history, precision)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from denoiser.choices import DEFAULT_MODELS_DIR
from denoiser.files import load_array
from denoiser.models import checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import RECIPE_VERSION, TrainConfig, model_id_for
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
    """Load the model this recipe names from the store, or train and store it."""
    started, run_dir = time.perf_counter(), Path(run_dir)
    model_id = model_id_for(config, train_sha256)
    found = None if retrain else checkpoint.find_checkpoint(models_dir, model_id)
    if found is not None:
        log.info("loaded model %s from %s (recipe already trained)", model_id, found.weights)
        result = {"model_id": model_id, "weights": str(found.weights), "trained": False,
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
    saved = checkpoint.save_checkpoint(
        models_dir,
        model_id,
        outcome.model,
        {
            "architecture": config.model,
            "config": config.to_dict(),
            "recipe_version": RECIPE_VERSION,
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
    log.info("trained model %s in %.1f s, saved to %s", model_id, outcome.seconds, saved.weights)
    result = {"model_id": model_id, "weights": str(saved.weights), "trained": True,
              "val_psnr": last.val_psnr, **outcome.precision.to_dict()}
    return record(run_dir, "train_or_load", result, started)
