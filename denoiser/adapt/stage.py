"""The adapt stage: a saved folder sample in, the adapted model in the store out.

:func:`adapt_sample` loads the sample and the MNIST digits, runs :func:`denoiser.adapt.fine_tune.adapt`
and stores the adapted model with its lineage
(:func:`save_adapted`: parent, folder digest, images, steps, minutes, the gate's numbers)
under :func:`adapted_id`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from denoiser.adapt.fine_tune import AdaptConfig, AdaptResult, adapt
from denoiser.adapt.gate import label_free
from denoiser.adapt.sample import load_sample, take_sample
from denoiser.checks.quality_net import find_quality, load_quality
from denoiser.checks.shapes import find_shapes, load_shapes
from denoiser.choices import SAMPLE_IMAGES
from denoiser.data.arrays import to_float
from denoiser.data.datasets import DATASETS
from denoiser.data.mnist import load_dataset
from denoiser.models.checkpoint import Checkpoint, load_model, save_checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.precision import FP32, Precision, resolve_precision
from denoiser.scans.restore import model_headroom

log = logging.getLogger(__name__)


def adapted_id(parent_id: str, folder_digest: str, config: AdaptConfig, images: int) -> str:
    """``<architecture>-<12 hex>`` from the parent, the folder's digest, the config and the
    number of scans sampled (another sample of the same folder is another model)."""
    blob = json.dumps({"parent": parent_id, "folder": folder_digest, "config": config.to_dict(), "images": images},
                      sort_keys=True)
    return f"{parent_id.split('-')[0]}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def save_adapted(models_dir: str | os.PathLike[str], parent: Checkpoint, result: AdaptResult, *,
                 folder: str, folder_digest: str, images: int, config: AdaptConfig,
                 precision: Precision = FP32, shapes: dict | None = None,
                 estimate: dict | None = None) -> Checkpoint:
    """Store the adapted model beside its parent; its metadata records the lineage and the
    gate's verdict (``shapes``: the shape check, :func:`denoiser.adapt.gate.shape_check`;
    ``estimate``: the PSNR estimate's, :func:`denoiser.adapt.gate.estimate_check`)."""
    label_free = [check for check in (shapes, estimate) if check is not None]
    inherited = ("architecture", "config", "recipe_version", "scan_pairs_version", "noise", "tone_headroom",
                 "data_sha256")
    keep = {k: parent.metadata[k] for k in inherited if k in parent.metadata}
    lineage = {"parent": parent.model_id, "folder": os.path.abspath(folder), "folder_sha256": folder_digest,
               "images": images, "steps": result.steps, "minutes": round(result.seconds / 60, 2),
               "config": config.to_dict(), "noise_profile": result.profile.summary(),
               "noise_levels": list(result.profile.levels),
               "noise_correlations": list(result.profile.correlations), "gate": result.gate,
               "gate_passed": result.better and all(bool(check["passed"]) for check in label_free),
               "shape_check": shapes, "estimate_check": estimate,
               "blind_spot_val_loss": result.blind_spot,
               "trained_on": ("digits scanned as the folder was (fitted)" if (result.scanning or {}).get("trained_on")
                              else "composites of the folder's backgrounds" if result.composite
                              else "the folder's noise"),
               "scanning": result.scanning,
               "handwriting_change": result.handwriting, **precision.to_dict()}
    model_id = adapted_id(parent.model_id, folder_digest, config, images)
    return save_checkpoint(models_dir, model_id, result.model, {**keep, "adapted": lineage})


def check_models(models_dir: str | os.PathLike[str], parent_id: str) -> tuple[Any, Any]:
    """The label-free checks' models for ``parent_id`` in the store: the digit-shape model and
    the learned quality estimate, None for one that is missing (said in the log for the
    estimate, the check that refused a worse model on real scans)."""
    shapes, quality = find_shapes(models_dir), find_quality(models_dir, parent_id)
    if quality is None:
        log.warning("the store %s has no learned quality estimate for %s: the gate decides without its "
                    "estimate check, which is the one that refused a worse model on real scans "
                    "(`denoiser models quality` makes one for the model clean uses, in about 7 minutes)",
                    models_dir, parent_id)
    return (None if shapes is None else load_shapes(shapes)), (None if quality is None else load_quality(quality))


def adapt_sample(sample_path: str | os.PathLike[str], parent: Checkpoint, *,
                 models_dir: str | os.PathLike[str], data_dir: str | None = None, dataset: str = "mnist",
                 config: AdaptConfig = AdaptConfig(), device: str = "auto", precision: str = "auto",
                 on_progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """The adapt stage: a saved folder sample (:func:`denoiser.adapt.sample.save_sample`)
    and the parent in the store -> the adapted model in the store, and the gate's numbers."""
    started = time.perf_counter()
    sample = load_sample(sample_path)
    mnist = load_dataset(data_dir, dataset=DATASETS[dataset])
    torch_device = resolve_device(device)
    chosen = resolve_precision(precision, torch_device)
    log.info("fine-tuning in %s (%s)", chosen.name, chosen.reason)
    gate_digits = to_float(mnist.test_images[: config.gate_images])
    parent_model = load_model(parent, device=torch_device)
    shape_model, estimator = check_models(models_dir, parent.model_id)
    checked = 0 if shape_model is None and estimator is None else min(len(sample.inputs), config.check_images)
    result = adapt(parent_model, sample.inputs, to_float(mnist.train_images),
                   gate_digits, headroom=model_headroom(parent.metadata), config=config,
                   parent_noise=parent.metadata.get("noise"),
                   device=torch_device, precision=chosen, on_progress=on_progress, checked=checked,
                   since=started, scales=sample.scales)
    check, estimate = label_free(parent_model, result.model, sample.inputs, sample.contrasts,
                                 shape_model=shape_model, estimator=estimator, device=torch_device,
                                 parent_outputs=result.parent_outputs, limit=config.check_images, seed=config.seed)
    if not config.steps:
        took = time.perf_counter() - started
        log.info("adapting took %.0f s of its %.0f s budget", took, config.minutes * 60)
    stored = save_adapted(models_dir, parent, result, folder=sample.folder, folder_digest=sample.digest,
                          images=len(sample.inputs), config=config, precision=chosen, shapes=check,
                          estimate=estimate)
    model_id, passed = stored.model_id, stored.metadata["adapted"]["gate_passed"]
    return {"model_id": model_id, "parent": parent.model_id, "passed": passed, **result.gate, "shapes": check,
            "estimate": estimate,
            "blind_spot": result.blind_spot, **chosen.to_dict(), "noise": result.profile.summary(),
            "white": result.profile.white, "composite": result.composite, "scanning": result.scanning,
            "levels": list(result.profile.levels),
            "correlations": list(result.profile.correlations), "steps": result.steps,
            "seconds": round(result.seconds, 1)}


def adapt_folder(in_dir: str | os.PathLike[str], parent: Checkpoint, *, models_dir: str | os.PathLike[str],
                 run_dir: str | os.PathLike[str], data_dir: str | None = None, config: AdaptConfig = AdaptConfig(),
                 max_images: int = SAMPLE_IMAGES, device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """Sample ``in_dir`` into ``run_dir`` and adapt ``parent`` to it (:func:`adapt_sample`),
    in this process: what ``denoiser adapt`` does, without Prefect."""
    path = Path(run_dir) / "sample.npz"
    take_sample(in_dir, path, headroom=model_headroom(parent.metadata), max_images=max_images, seed=config.seed)
    return adapt_sample(path, parent, models_dir=models_dir, data_dir=data_dir, config=config, device=device,
                        precision=precision)
