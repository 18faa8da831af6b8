"""The adaptation flow: sample the folder -> adapt the model to its noise -> gate.

Each stage is a retryable task that hands the next a file (the sample as ``.npz``, the
adapted model in the store). The gate decides which model cleans this folder: the adapted
one only if it beats its parent on the gate's images (:data:`denoiser.adapt.GATE_DB`).
A folder whose noise is not white trains and stores nothing; every run's decision is kept in
its run folder as ``outcome.json``.

    denoiser adapt scans/ --minutes 2.5
    denoiser clean scans/ cleaned/ --adapt     # adapt on the first run, reuse while the noise holds
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from denoiser import (adapt, adapt_stage, checkpoint, cleaning, files, folder_sample, noise_profile, registry,
                      restore, stages, workdir)
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR
from denoiser.device import resolve_device
from flows import interrupt
from flows.logs import library_logs
from flows.policy import FLOW_DEFAULTS, TASK_DEFAULTS


@task(name="sample-folder", task_run_name="sample-folder", **TASK_DEFAULTS)
@library_logs
def sample(in_dir: str, parent_weights: str, run_dir: str, max_images: int, seed: int) -> dict[str, Any]:
    parent = checkpoint.resolve_checkpoint(parent_weights, Path(parent_weights).parent)
    taken = folder_sample.sample_folder(in_dir, headroom=restore.model_headroom(parent.metadata),
                                        max_images=max_images, seed=seed)
    if len(taken.inputs) < 10:
        raise ValueError(f"{in_dir}: only {len(taken.inputs)} readable images; adapting needs at least 10")
    path = folder_sample.save_sample(taken, Path(run_dir) / "sample.npz")
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

    outcome = adapt_stage.adapt_sample(sample_path, parent, models_dir=models_dir, data_dir=data_dir,
                                 dataset=dataset, config=adapt.AdaptConfig(**config), device=device,
                                 precision=precision, on_progress=report)
    update_progress_artifact(artifact_id=progress, progress=100.0)
    return outcome


@task(name="gate", task_run_name="gate", **TASK_DEFAULTS)
def gate(outcome: dict[str, Any]) -> dict[str, Any]:
    """Which model cleans this folder, and why (the numbers that decided it)."""
    logger = get_run_logger()
    chosen = outcome["model_id"] if outcome["passed"] else outcome["parent"]
    loss = outcome["blind_spot"]
    if not outcome.get("white", True):  # the library's verdict (NoiseProfile.white): nothing was trained
        share, limit = outcome["noise"]["correlated_share"], noise_profile.MAX_CORRELATED_SHARE
        why = (f"{share:.0%} of the folder's scans have noise alike between neighbouring pixels (blur, JPEG, "
               f"dust, uneven lighting; at most {limit:.0%} may): adapting trains on white noise, which does "
               "not describe them, so nothing was trained")
    else:
        why = (f"{outcome['parent_db']:.2f} dB (parent) -> {outcome['adapted_db']:.2f} dB (adapted) on "
               f"digits with the folder's noise, needs +{adapt.GATE_DB} dB; blind-spot loss on the folder's "
               f"scans {loss['parent']:.5f} -> {loss['adapted']:.5f}, needs to fall "
               f"{adapt.BLIND_SPOT_MARGIN:.0%}")
    if outcome["passed"]:
        logger.info("the adapted model %s cleans this folder: %s", chosen, why)
    else:
        logger.warning("the parent %s keeps cleaning this folder: %s", chosen, why)
    rows = [{"model": outcome["parent"], "role": "parent", "gate_db": outcome["parent_db"]}]
    if outcome["model_id"] is not None:
        rows.append({"model": outcome["model_id"], "role": "adapted", "gate_db": outcome["adapted_db"]})
    create_table_artifact(key="adapt-gate", table=rows,
                          description=f"Adapted model against its parent ({why})")
    return {**outcome, "chosen": chosen, "why": why}


@flow(name="adapt-folder", **FLOW_DEFAULTS)
def adapt_folder(
    in_dir: str,
    parent: str | None = None,
    minutes: float = 2.5,
    max_images: int = 5000,
    models_dir: str = str(DEFAULT_MODELS_DIR),
    data_dir: str | None = None,
    dataset: str = "mnist",
    runs_dir: str = str(DEFAULT_RUNS_DIR),
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Adapt ``parent`` (default: the model clean uses) to the noise of ``in_dir``'s images."""
    choice = registry.choose_clean_model(parent, models_dir)
    found = choice.checkpoint or stages.train_clean_default(models_dir, runs_dir=runs_dir, data_dir=data_dir,
                                                            device=device, precision=precision)
    run_dir = Path(runs_dir) / f"adapt-{stages.new_run_id()}"
    taken = sample(in_dir, str(found.weights), str(run_dir), max_images, seed)
    config = adapt.AdaptConfig(minutes=minutes, seed=seed).to_dict()
    interrupt.check()  # a Ctrl-C that Prefect caught still stops the run before it adapts
    outcome = adapt_model(taken["sample"], str(found.weights), models_dir, data_dir, dataset, config, device,
                          precision)
    interrupt.check()
    decided = {**gate(outcome), "files": taken["files"], "images": taken["images"],
               "unreadable": taken["unreadable"]}
    files.write_json(run_dir / "outcome.json", decided)  # the record, refusals included
    return decided


@task(name="check-adaptation", task_run_name="check-adaptation", **TASK_DEFAULTS)
@library_logs
def check_adaptation(in_dir: str, out_dir: str, parent_weights: str, device: str) -> str | None:
    """Why this folder's model must be adapted (again), or None to reuse the last one: the
    folder's noise, measured on a sample of 300 images, against what it was adapted on."""
    found = checkpoint.resolve_checkpoint(parent_weights, Path(parent_weights).parent)
    taken = folder_sample.sample_folder(in_dir, headroom=restore.model_headroom(found.metadata),
                                        max_images=300, seed=1, digest=False)  # every run: read little
    if not taken.inputs:
        return None  # nothing readable to measure: clean with what there is
    torch_device = resolve_device(device)
    model = cleaning.cached_model(found, torch_device)  # loaded once per process, as the shards use it
    profile = noise_profile.NoiseProfile.measure(model, taken.inputs, torch_device)
    return noise_profile.readapt_reason(workdir.read_adaptation(out_dir), found.model_id, profile)


def model_for_folder(in_dir: str, out_dir: str, parent: dict, *, minutes: float, models_dir: str,
                     data_dir: str | None, runs_dir: str, device: str, precision: str = "auto") -> dict:
    """``clean --adapt``: the model entry the shards use. The folder's adapted model is made
    (again) when :func:`check_adaptation` says so, and replaces ``parent`` where it passed
    the gate; the decision is kept in ``OUT_DIR/.denoiser/adapted.json``."""
    reason = check_adaptation(in_dir, out_dir, parent["weights"], device)
    if reason is not None:
        get_run_logger().info("adapting %s to this folder: %s", parent["model_id"], reason)
        outcome = adapt_folder(in_dir=in_dir, parent=parent["weights"], minutes=minutes,
                               models_dir=models_dir, data_dir=data_dir, runs_dir=runs_dir, device=device,
                               precision=precision)
        workdir.write_adaptation(out_dir, {"parent": parent["model_id"], "model_id": outcome["model_id"],
                                           "chosen": outcome["chosen"], "why": outcome["why"],
                                           "levels": outcome["levels"],
                                           "correlations": outcome["correlations"]})
    state = workdir.read_adaptation(out_dir)
    span = (parent["span"][0], time.time())  # choosing and adapting the model is library work
    if state is None or state["chosen"] == parent["model_id"]:
        return {**parent, "span": span}
    found = checkpoint.resolve_checkpoint(state["chosen"], models_dir)
    return {**parent, "model_id": found.model_id, "weights": str(found.weights), "reason": "adapted",
            "why": f"{found.model_id}: adapted from {state['parent']} to this folder", "rerun": True,
            "span": span}
