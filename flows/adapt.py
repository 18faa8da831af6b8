"""The adaptation flow: sample the folder -> adapt the model to its noise -> gate.

Each stage is a retryable task that hands the next a file (the sample as ``.npz``, the
adapted model in the store). The gate decides which model cleans this folder: the adapted
one only if it beats its parent on the gate's images (:mod:`denoiser.adapt.gate`).
A folder whose noise is not white (print, texture, blur, JPEG) trains on known digits laid on
its own backgrounds (:mod:`denoiser.adapt.composite`); every run's decision is kept in
its run folder as ``outcome.json``.

    denoiser adapt scans/ --minutes 2.5
    denoiser clean scans/ cleaned/ --adapt     # adapt on the first run, reuse while the noise holds
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from denoiser import files, runs
from denoiser.adapt import decide, fine_tune, stage
from denoiser.adapt import sample as folder_sample
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, SAMPLE_IMAGES
from denoiser.folders import model_choice
from denoiser.folders.model_choice import ModelChoice
from denoiser.folders.settings import CleanOptions, CleanRun
from denoiser.models import checkpoint
from denoiser.scans import restore
from flows import interrupt
from flows.logs import library_logs
from flows.policy import FLOW_DEFAULTS, TASK_DEFAULTS


@task(name="parent-model", task_run_name="parent-model", **TASK_DEFAULTS)
@library_logs
def parent_model(models_dir: str, parent: str | None, runs_dir: str, data_dir: str | None, device: str,
                 precision: str) -> str:
    """The weights of the model to adapt: trained first where the store has none."""
    return str(model_choice.model_to_adapt(models_dir, parent, runs_dir=runs_dir, data_dir=data_dir,
                                           device=device, precision=precision).weights)


@task(name="sample-folder", task_run_name="sample-folder", **TASK_DEFAULTS)
@library_logs
def sample(in_dir: str, parent_weights: str, run_dir: str, max_images: int, seed: int) -> dict[str, Any]:
    parent = checkpoint.resolve_checkpoint(parent_weights, Path(parent_weights).parent)
    path = Path(run_dir) / "sample.npz"
    taken = folder_sample.take_sample(in_dir, path, headroom=restore.model_headroom(parent.metadata),
                                      max_images=max_images, seed=seed)
    get_run_logger().info("sampled %d of %d files (%d unreadable, left out)", len(taken.inputs), taken.files,
                          taken.unreadable)
    return {"sample": str(path), "files": taken.files, "images": len(taken.inputs),
            "unreadable": taken.unreadable, "digest": taken.digest}


@task(name="adapt", task_run_name="adapt", **TASK_DEFAULTS)
@library_logs
def adapt_model(sample_path: str, parent_weights: str, models_dir: str, data_dir: str | None, dataset: str,
                config: dict, device: str, precision: str = "auto") -> dict[str, Any]:
    parent = checkpoint.resolve_checkpoint(parent_weights, Path(parent_weights).parent)
    progress = create_progress_artifact(progress=0.0, description="adapting to the folder's noise")

    def report(fraction: float) -> None:
        update_progress_artifact(artifact_id=progress, progress=round(100 * fraction, 1))

    outcome = stage.adapt_sample(sample_path, parent, models_dir=models_dir, data_dir=data_dir,
                                 dataset=dataset, config=fine_tune.AdaptConfig(**config), device=device,
                                 precision=precision, on_progress=report)
    update_progress_artifact(artifact_id=progress, progress=100.0)
    return outcome


@task(name="gate", task_run_name="gate", **TASK_DEFAULTS)
def gate(outcome: dict[str, Any]) -> dict[str, Any]:
    """Which model cleans this folder, and why (the numbers that decided it)."""
    chosen, why = decide.gate_verdict(outcome)
    if outcome["passed"]:
        get_run_logger().info("the adapted model %s cleans this folder: %s", chosen, why)
    else:
        get_run_logger().warning("the parent %s keeps cleaning this folder: %s", chosen, why)
    rows = [{"model": outcome["parent"], "role": "parent", "gate_db": outcome["parent_db"]}]
    if outcome["model_id"] is not None:
        rows.append({"model": outcome["model_id"], "role": "adapted", "gate_db": outcome["adapted_db"]})
    create_table_artifact(key="adapt-gate", table=rows, description=f"Adapted model against its parent ({why})")
    return {**outcome, "chosen": chosen, "why": why}


@flow(name="adapt-folder", **FLOW_DEFAULTS)
def adapt_folder(
    in_dir: str,
    parent: str | None = None,
    minutes: float = 2.5,
    max_images: int = SAMPLE_IMAGES,
    models_dir: str = str(DEFAULT_MODELS_DIR),
    data_dir: str | None = None,
    dataset: str = "mnist",
    runs_dir: str = str(DEFAULT_RUNS_DIR),
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Adapt ``parent`` (default: the model clean uses) to the noise of ``in_dir``'s images."""
    weights = parent_model(models_dir, parent, runs_dir, data_dir, device, precision)
    run_dir = Path(runs_dir) / f"adapt-{runs.new_run_id()}"
    taken = sample(in_dir, weights, str(run_dir), max_images, seed)
    config = fine_tune.AdaptConfig(minutes=minutes, seed=seed).to_dict()
    interrupt.check()  # a Ctrl-C that Prefect caught still stops the run before it adapts
    outcome = adapt_model(taken["sample"], weights, models_dir, data_dir, dataset, config, device,
                          precision)
    interrupt.check()
    decided = {**gate(outcome), "files": taken["files"], "images": taken["images"],
               "unreadable": taken["unreadable"]}
    files.write_json(run_dir / "outcome.json", decided)  # the record, refusals included
    return decided


@task(name="check-adaptation", task_run_name="check-adaptation", **TASK_DEFAULTS)
@library_logs
def check_adaptation(in_dir: str, out_dir: str, choice: ModelChoice, device: str) -> str | None:
    """Why this folder's model must be adapted (again), or None to reuse the last decision."""
    return decide.readapt_reason(in_dir, out_dir, choice, device)


def adapted_choice(in_dir: str, out_dir: str, choice: ModelChoice, run: CleanRun,
                   options: CleanOptions) -> ModelChoice:
    """``clean --adapt``: the folder's adapted model is made (again) when
    :func:`check_adaptation` says so, and replaces ``choice`` where it passed the gate; the
    decision is kept in ``OUT_DIR/.denoiser/adapted.json``."""
    reason = check_adaptation(in_dir, out_dir, choice, options.device)
    if reason is not None:
        get_run_logger().info("adapting %s to this folder: %s", choice.model_id, reason)
        outcome = adapt_folder(in_dir=in_dir, parent=choice.weights, minutes=run.adapt_minutes,
                               models_dir=run.models_dir, data_dir=run.data_dir, runs_dir=run.runs_dir,
                               device=options.device, precision=options.precision)
        decide.record(out_dir, choice.model_id, outcome)
    return decide.cleaning_choice(out_dir, choice, run.models_dir)
