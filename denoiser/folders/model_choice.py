"""Where the model a folder is cleaned with is chosen, and loaded once per process.

:func:`choose_for_clean` is the whole decision, made once per run before any shard: the
model named, else the one promoted for clean, else the scan recipe's (trained on MNIST
first if the store lacks it, with its digit-shape model and learned quality estimate); the
digit-shape model calibrated for it; the quality estimate; the precision it runs in. It
returns a :class:`ModelChoice` that every shard receives as it is.

    choice = choose_for_clean(CleanRun(model=None), CleanOptions())
    print(choice.why)            # "unet-cd0707c07a23: promoted as the default for clean"
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from denoiser.checks.quality_net import QualityEstimator, find_quality, load_quality
from denoiser.checks.shapes import ShapeModel, find_shapes, load_shapes
from denoiser.data.mnist import DataError
from denoiser.folders.settings import CleanOptions, CleanRun
from denoiser.models import registry
from denoiser.models.checkpoint import Checkpoint, load_model, resolve_checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.precision import Precision, resolve_precision
from denoiser.pipeline.stages import train_clean_default
from denoiser.pipeline.train_stage import estimate_training_seconds
from denoiser.sharing.download import model_reference
from denoiser.training.quality import ensure_quality
from denoiser.training.shapes import ensure_shapes

log = logging.getLogger(__name__)

REASONS = {"named": "named by the user", "promoted": "promoted as the default for clean",
           "recipe": "the scan recipe's model (nothing promoted for clean)"}


@dataclass(frozen=True)
class ModelChoice:
    """The model a run cleans with, what goes with it, and why."""

    model_id: str
    weights: str  # the checkpoint's .pt
    reason: str = "named"  # named, promoted, recipe or adapted
    rerun: bool = True  # clean again the files another model cleaned
    shapes: str | None = None  # the digit-shape model's weights (flags non-digits), if the store has one
    quality: str | None = None  # the learned PSNR estimate's weights, else the analytic estimate
    precision: str = "fp32"  # resolved: fp32 or bf16
    precision_reason: str = "float32 by default"
    parent: str | None = None  # for an adapted model: the model it was adapted from

    @classmethod
    def of(cls, found: Checkpoint, *, reason: str = "named", device: str = "cpu",
           precision: str = "fp32") -> ModelChoice:
        """A choice of ``found`` alone (no shape or quality model), for library callers."""
        resolved = resolve_precision(precision, resolve_device(device))
        return cls(found.model_id, str(found.weights), reason, True, precision=resolved.name,
                   precision_reason=resolved.reason)

    @property
    def why(self) -> str:
        """One line for the log, the report and the UI."""
        if self.reason == "adapted":
            return f"{self.model_id}: adapted from {self.parent} to this folder"
        return f"{self.model_id}: {REASONS[self.reason]}"

    @property
    def resolved_precision(self) -> Precision:
        return Precision(self.precision, self.precision_reason)

    def checkpoint(self) -> Checkpoint:
        return resolve_checkpoint(self.weights, Path(self.weights).parent)

    def adapted(self, found: Checkpoint) -> ModelChoice:
        """This choice with the folder's adapted model in its place (its checks stay)."""
        return replace(self, model_id=found.model_id, weights=str(found.weights), reason="adapted", rerun=True,
                       parent=self.model_id)


def choose_for_clean(run: CleanRun, options: CleanOptions) -> ModelChoice:
    """The model ``run`` cleans with (see the module), loaded and checked once here so that
    a bad checkpoint fails before any shard. Raises FileNotFoundError or ValueError (one
    line) for a model that cannot be had."""
    run = replace(run, model=model_reference(run.model, run.models_dir))  # a bundle: into the store first
    picked, found = _chosen_or_trained(run.models_dir, run.model, lambda: _train_default(run, options))
    device = resolve_device(options.device)
    cached_model(found, device)
    shapes = _calibrated_shapes(run, found)
    quality = find_quality(run.models_dir, found.model_id)
    if quality is None:
        log.info("the store %s has no learned quality estimate for %s: psnr_est is the analytic one, which "
                 "misses more on blurred, JPEG or dusty scans (`denoiser models quality` trains one in about "
                 "4 minutes)", run.models_dir, found.model_id)
    else:
        log.info("psnr_est: the learned estimate for %s (%s)", found.model_id, quality)
    precision = resolve_precision(options.precision, device)
    log.info("denoising in %s (%s)", precision.name, precision.reason)
    return ModelChoice(found.model_id, str(found.weights), picked.reason, picked.rerun,
                       str(shapes) if shapes is not None else None,
                       str(quality) if quality is not None else None, precision.name, precision.reason)


def _chosen_or_trained(models_dir: str | os.PathLike[str], reference: str | None,
                       train: Callable[[], Checkpoint]) -> tuple[registry.Choice, Checkpoint]:
    """The model :func:`denoiser.models.registry.choose_clean_model` picks, else ``train()``'s,
    under the store's training lock: a run that finds it being trained waits, then looks again."""
    picked = registry.choose_clean_model(reference, models_dir)
    if picked.checkpoint is not None:
        return picked, picked.checkpoint
    with registry.training_lock(models_dir):
        picked = registry.choose_clean_model(reference, models_dir)
        return picked, picked.checkpoint or train()


def _train_default(run: CleanRun, options: CleanOptions) -> Checkpoint:
    """:func:`train_default`, or with ``run.train`` False, refuse."""
    if not run.train:
        raise no_training(run.models_dir)
    return train_default(run.models_dir, runs_dir=run.runs_dir, data_dir=run.data_dir, device=options.device,
                         precision=options.precision)


def train_default(models_dir: str | os.PathLike[str], *, runs_dir: str | os.PathLike[str],
                  data_dir: str | None = None, device: str = "auto", precision: str = "auto") -> Checkpoint:
    """Train the scan recipe's model into the store, and its digit-shape model and quality
    estimate (the OOD flag, ``psnr_est`` and the adaptation gate's label-free checks use
    them), after saying how long that takes here."""
    minutes = estimate_training_seconds(registry.CLEAN_RECIPE, device=device, precision=precision) / 60
    log.warning("%s: training the scan recipe's model, then its digit-shape model and quality estimate, "
                "about %.0f minutes on this machine (its pace measured just now) before any file is cleaned; "
                "to clean without training, give --model a bundle exported from a store that has a model "
                "(`denoiser models export ID -o FILE` there)", no_model_line(models_dir), minutes)
    found = train_clean_default(models_dir, runs_dir=runs_dir, data_dir=data_dir, device=device,
                                precision=precision)
    ensure_shapes(models_dir, data_dir, cleaner=found)  # MNIST is at hand: the OOD flag too
    ensure_quality(models_dir, found, data_dir)  # and the learned PSNR estimate
    return found


def model_to_adapt(models_dir: str | os.PathLike[str], parent: str | None, *, runs_dir: str | os.PathLike[str],
                   data_dir: str | None = None, device: str = "auto", precision: str = "auto") -> Checkpoint:
    """The model ``denoiser adapt`` starts from: ``parent`` (an id or a path), else the one
    ``clean`` uses; where the store has none, :func:`train_default` first, under the store's
    training lock as ``clean`` does (a run that finds it being trained waits and uses it)."""
    return _chosen_or_trained(models_dir, parent, lambda: train_default(
        models_dir, runs_dir=runs_dir, data_dir=data_dir, device=device, precision=precision))[1]


def no_model_line(models_dir: str | os.PathLike[str]) -> str:
    return (f"no model for clean in {models_dir} (none named, none promoted, and not the scan recipe's "
            "trained one)")


def no_training(models_dir: str | os.PathLike[str]) -> ValueError:
    """The one-line error of a run that may not train (``--no-train``) and has no model."""
    return ValueError(f"{no_model_line(models_dir)}, and --no-train was given: import a model bundle "
                      "(`denoiser models import FILE|URL`, or `clean --model FILE|URL`), or drop --no-train")


def _calibrated_shapes(run: CleanRun, found: Checkpoint) -> Path | None:
    """The store's digit-shape model, calibrated for ``found`` if it was not and MNIST is at
    hand (never downloaded for this); None, said in the log, when the store has none."""
    weights = find_shapes(run.models_dir)
    if weights is None:
        log.info("the store %s has no digit-shape model: letters and other non-digits are not flagged as OOD "
                 "(`denoiser models shapes` trains one in about 3 minutes)", run.models_dir)
        return None
    if cached_shapes(str(weights)).calibrated_for(found.model_id) is None:
        try:
            ensure_shapes(run.models_dir, run.data_dir, cleaner=found, download=False)
        except DataError as error:
            log.warning("the digit-shape model is not calibrated for %s and MNIST is not at hand (%s): its "
                        "threshold was set on clean digits and flags more outputs of noisy ones",
                        found.model_id, str(error).splitlines()[0])
    return weights


# --- loaded once per process, shared by its shards -------------------------------------

_MODELS: dict[tuple, torch.nn.Module] = {}
_LOCK = threading.Lock()
_SHAPES: dict[tuple, ShapeModel] = {}
_QUALITY: dict[tuple, QualityEstimator] = {}


def cached_model(found: Checkpoint, device: str | torch.device) -> torch.nn.Module:
    """The checkpoint's model, loaded once per process and shared by its shards
    (:func:`denoiser.models.infer.denoise_images` works on its own copy of it)."""
    info = os.stat(found.weights)
    key = (str(found.weights), info.st_mtime_ns, info.st_size, str(device))
    with _LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model at a time: a long-lived server switches, not piles up
            _MODELS[key] = load_model(found, device=device)
        return _MODELS[key]


def cached_shapes(weights: str | None) -> ShapeModel | None:
    """The shape model at ``weights``, loaded once per process (None for None)."""
    if weights is None:
        return None
    info, meta = os.stat(weights), os.stat(Path(weights).with_suffix(".json"))  # calibrations go there
    key = ("shapes", weights, info.st_mtime_ns, info.st_size, meta.st_mtime_ns)
    with _LOCK:
        if key not in _SHAPES:
            _SHAPES.clear()
            _SHAPES[key] = load_shapes(weights)
        return _SHAPES[key]


def cached_quality(weights: str | None) -> QualityEstimator | None:
    """The quality estimator at ``weights``, loaded once per process (None for None)."""
    if weights is None:
        return None
    info = os.stat(weights)
    key = ("quality", weights, info.st_mtime_ns, info.st_size)
    with _LOCK:
        if key not in _QUALITY:
            _QUALITY.clear()
            _QUALITY[key] = load_quality(weights)
        return _QUALITY[key]
