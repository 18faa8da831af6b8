"""The MNIST pipeline flow: ingest -> synthesize noise -> train or load -> denoise -> report.

Each stage is a task with retries that wraps one function of :mod:`denoiser.pipeline.stages` and
hands the next stage file paths inside ``<runs_dir>/<run_id>/``. Each stage's result is
kept as JSON in the run directory under a digest of its parameters, so a retry of the
whole flow run (or a rerun with the same ``run_id``) reuses the stages that completed,
and a deleted run directory is never taken for done.

Flow parameters with fixed choices are typed ``Literal[...]``, so Prefect validates them and
the UI offers the choices. No ``from __future__ import annotations``: a postponed
``Literal`` is not resolved where Prefect builds its parameter model.

Run it with ``denoiser run`` (see ``flows/cli.py``) or from Python::

    from flows.pipeline import mnist_pipeline
    mnist_pipeline(epochs=1, train_limit=2048, test_limit=512)
"""

import base64
import functools
import inspect
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.states import Completed

from denoiser import runs
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, DEVICES, PRECISIONS
from denoiser.data.datasets import DATASETS
from denoiser.files import read_json, write_json
from denoiser.models.device import resolve_device
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import DEFAULT_MODEL, LOSSES, MODEL_NAMES, SCHEDULES, TrainConfig
from denoiser.noise.spec import DEFAULT_NOISE
from denoiser.pipeline import stages, train_stage
from denoiser.pipeline.record import done_path, read_done
from flows import interrupt
from flows.logs import library_logs
from flows.policy import FLOW_DEFAULTS, RETRY_DELAY_SECONDS, TASK_DEFAULTS

# --- caching and retries ------------------------------------------------------------


def _stage_task(name: str):
    """A stage: retried, its result kept as JSON in the run directory and reused by a later
    call with the same parameters (a flow-run retry, ``--run-id``), library logs in the run
    logs. Prefect itself persists nothing (:mod:`flows.policy`)."""
    make_task = task(name=name, task_run_name=name, **TASK_DEFAULTS)

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def remembered(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            path = done_path(bound.arguments["run_dir"], name, dict(bound.arguments))
            stored = read_done(path)
            if stored is not None:
                return Completed(data=stored, name="Cached", message=f"reused {path.name}")
            result = fn(*args, **kwargs)
            write_json(path, result)
            return result

        return make_task(library_logs(remembered))

    return decorate


# --- the five stages ----------------------------------------------------------------


@_stage_task("ingest")
def ingest(run_dir: str, data_dir: str | None, dataset: str, test_limit: int | None) -> dict:
    return stages.ingest(run_dir, data_dir=data_dir, dataset=dataset, test_limit=test_limit)


@_stage_task("synthesize-noise")
def synthesize_noise(run_dir: str, test_images: str, noise: str, seed: int) -> dict:
    return stages.synthesize_noise(run_dir, test_images=test_images, noise=noise, seed=seed)


@_stage_task("train-or-load")
def train_or_load(run_dir: str, train_images: str, train_sha256: str, config: dict,
                  models_dir: str, device: str, retrain: bool, precision: str = "auto") -> dict:
    progress_id = create_progress_artifact(
        progress=0.0, key="training-progress", description="Training progress (% of batches)"
    )

    def on_progress(fraction: float) -> None:
        update_progress_artifact(artifact_id=progress_id, progress=round(100 * fraction, 1))

    result = train_stage.train_or_load(
        run_dir, train_images=train_images, train_sha256=train_sha256,
        config=TrainConfig(**config), models_dir=models_dir, device=device, precision=precision,
        retrain=retrain, on_progress=on_progress,
    )
    if not result["trained"]:
        update_progress_artifact(artifact_id=progress_id, progress=100.0,
                                 description=f"Loaded {result['model_id']} from the store")
    return result


@_stage_task("denoise")
def denoise(run_dir: str, noisy: str, model_id: str, models_dir: str, batch_size: int | None,
            device: str, precision: str = "auto") -> dict:
    return stages.denoise(run_dir, noisy=noisy, model_id=model_id, models_dir=models_dir,
                          batch_size=batch_size, device=device, precision=precision)


@_stage_task("write-report")
def write_report(run_dir: str, run_id: str, test_images: str, test_labels: str, noisy: str,
                 denoised: str, noise: str, noise_seed: int, model_id: str) -> dict:
    result = stages.write_report(
        run_dir, run_id=run_id, test_images=test_images, test_labels=test_labels, noisy=noisy,
        denoised=denoised, noise=noise, noise_seed=noise_seed, model_id=model_id,
    )
    publish_artifacts(result)
    return result


# --- artifacts ----------------------------------------------------------------------


def summary_table(summary: dict) -> list[dict]:
    """Rows of metric / noisy / denoised for the table artifact (plain Python values)."""
    rows = []
    for metric in ("psnr", "ssim", "mse", "bce"):
        for stat in ("mean", "median"):
            rows.append({
                "metric": f"{stat} {metric}",
                "noisy": summary[f"{stat}_{metric}_noisy"],
                "denoised": summary[f"{stat}_{metric}_denoised"],
            })
    return rows


def publish_artifacts(result: dict) -> None:
    summary = read_json(result["summary"])
    key = f"run-{summary['run_id']}".lower()
    create_table_artifact(
        table=summary_table(summary), key="denoise-summary",
        description=f"Reconstruction error, {summary['images']} test images, run {summary['run_id']}",
    )
    preview = base64.b64encode(Path(result["preview"]).read_bytes()).decode()
    stage_lines = "\n".join(
        f"| {stage} | {seconds:.2f} |" for stage, seconds in summary["seconds_per_stage"].items()
    )
    create_markdown_artifact(
        key="denoise-report",
        description=f"Figures and preview of {key}",
        markdown=(
            f"# Denoising run {summary['run_id']}\n\n"
            f"Model `{summary['model_id']}`, noise `{summary['noise']}` "
            f"(seed {summary['noise_seed']}), {summary['images']} test images.\n\n"
            f"| | noisy | denoised |\n|---|---|---|\n"
            f"| mean PSNR (dB) | {summary['mean_psnr_noisy']:.2f} | {summary['mean_psnr_denoised']:.2f} |\n"
            f"| mean SSIM | {summary['mean_ssim_noisy']:.3f} | {summary['mean_ssim_denoised']:.3f} |\n"
            f"| mean MSE | {summary['mean_mse_noisy']:.4f} | {summary['mean_mse_denoised']:.4f} |\n\n"
            f"Rows: clean, noisy, denoised.\n\n![preview](data:image/png;base64,{preview})\n\n"
            f"| stage | seconds |\n|---|---|\n{stage_lines}\n\n"
            f"Report: `{result['report']}`\n"
        ),
    )


# --- the flow -----------------------------------------------------------------------


def default_run_id() -> str:
    """Stable for a flow run (so its retries share a run directory), unique across runs."""
    started = flow_run.scheduled_start_time
    return f"{started:%Y%m%d-%H%M%S}-{str(flow_run.id).replace('-', '')[:6]}"


@flow(name="mnist-denoise", retries=1, retry_delay_seconds=RETRY_DELAY_SECONDS, **FLOW_DEFAULTS)
def mnist_pipeline(
    data_dir: str | None = None,
    dataset: Literal[tuple(DATASETS)] = "mnist",
    model: Literal[MODEL_NAMES] = DEFAULT_MODEL,
    noise: str = DEFAULT_NOISE,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    loss: Literal[LOSSES] | None = None,
    schedule: Literal[SCHEDULES] | None = None,
    max_train_minutes: float | None = None,
    denoise_batch_size: int | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    device: Literal[DEVICES] = "auto",
    precision: Literal[PRECISIONS] = "auto",
    seed: int = 0,
    retrain: bool = False,
    runs_dir: str = str(DEFAULT_RUNS_DIR),
    models_dir: str = str(DEFAULT_MODELS_DIR),
    run_id: str | None = None,
    retry_delay_seconds: float = 10,
    keep_runs: int | None = None,
    keep_days: float | None = None,
) -> dict:
    """Ingest MNIST, noise the test set, train or load the DAE, denoise, and report.

    Training options left unset come from the model's recipe. With ``keep_runs`` or
    ``keep_days``, earlier run folders beyond them are removed at the end."""
    trains_in = resolve_precision(precision, resolve_device(device))  # bf16 buys more epochs
    config = TrainConfig.recipe(model, bf16=trains_in.name == "bf16", noise=noise, epochs=epochs,
                                batch_size=batch_size, learning_rate=learning_rate, loss=loss,
                                schedule=schedule, train_limit=train_limit, seed=seed,
                                max_minutes=max_train_minutes)
    run_id = run_id or default_run_id()
    run_dir = str(Path(runs_dir) / run_id)
    get_run_logger().info("run %s in %s", run_id, run_dir)
    opts = {"retry_delay_seconds": retry_delay_seconds}

    def run(stage, *args):  # noqa: ANN001, ANN202 - a reused stage returns its "Cached" state
        done = stage.with_options(**opts)(*args, return_state=True).result()
        interrupt.check()  # a Ctrl-C that Prefect caught still stops the run before the next stage
        return done

    ingested = run(ingest, run_dir, data_dir, dataset, test_limit)
    noised = run(synthesize_noise, run_dir, ingested["test_images"], config.noise, seed)
    trained = run(train_or_load, run_dir, ingested["train_images"], ingested["train_sha256"],
                  config.to_dict(), models_dir, device, retrain, precision)
    cleaned = run(denoise, run_dir, noised["noisy"], trained["model_id"], models_dir, denoise_batch_size,
                  device, precision)
    reported = run(write_report, run_dir, run_id, noised["truth"], ingested["test_labels"], noised["noisy"],
                   cleaned["denoised"], noised["noise"], noised["noise_seed"], trained["model_id"])
    if keep_runs is not None or keep_days is not None:
        prune_runs(runs_dir, keep_runs, keep_days, run_id)
    return reported


@task(name="prune-runs", task_run_name="prune-runs", **TASK_DEFAULTS)
def prune_runs(runs_dir: str, keep_runs: int | None, keep_days: float | None, run_id: str) -> list[str]:
    """Remove earlier run folders the retention lets go (:mod:`denoiser.folders.retention`)."""
    gone = runs.prune_pipeline_runs(runs_dir, runs.Retention(keep_runs, keep_days), current=run_id)
    if gone:
        get_run_logger().info("retention: removed %d earlier run folders from %s", len(gone), runs_dir)
    return gone
