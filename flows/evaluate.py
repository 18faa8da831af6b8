"""The evaluation flow: prepare the noisy test set, score each method in its own task, summarize.

Methods run one after another, not side by side, so each one's images/s is measured on
an otherwise idle machine.

    denoiser evaluate --models unet-3f2a9c1b7d4e conv-1a2b3c4d5e6f --limit 1000
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from denoiser import runs
from denoiser.choices import DEFAULT_MODELS_DIR
from denoiser.evaluation import evaluate
from denoiser.models import checkpoint
from flows import interrupt
from flows.logs import library_logs
from flows.policy import FLOW_DEFAULTS, TASK_DEFAULTS


@task(name="prepare-evaluation", task_run_name="prepare-evaluation", **TASK_DEFAULTS)
@library_logs
def prepare(out_dir: str, data_dir: str | None, dataset: str, noises: list[str], scans: bool,
            limit: int | None, tune_images: int, seed: int) -> dict:
    return evaluate.prepare(out_dir, data_dir=data_dir, dataset=dataset, noises=noises, scans=scans,
                            limit=limit, tune_images=tune_images, seed=seed)


@task(name="score", task_run_name="score-{method}", **TASK_DEFAULTS)
@library_logs
def score(method: str, kind: str, out_dir: str, prepared: dict, models_dir: str, device: str,
          precision: str = "auto") -> str | None:
    if kind == "identity":
        return evaluate.score_noisy(out_dir, prepared)
    if kind == "model":
        return evaluate.score_model(out_dir, prepared, method, models_dir=models_dir, device=device,
                                    precision=precision)
    return evaluate.score_baseline(out_dir, prepared, method)


@task(name="summarize", task_run_name="summarize", **TASK_DEFAULTS)
@library_logs
def summarize(out_dir: str, parts: list[str | None]) -> dict:
    summary = evaluate.summarize(out_dir, parts)
    table = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "params"}
             | {"params": str({k: v for k, v in row["params"].items() if k != "validation_psnr"})}
             for row in summary["rows"]]
    create_table_artifact(table=table, key="evaluation-summary",
                          description=f"Mean and median PSNR / SSIM per method and noise ({out_dir})")
    return summary


@flow(name="evaluate", **FLOW_DEFAULTS)
def evaluate_models(
    models: list[str] | None = None,
    baselines: list[str] | None = None,
    noises: list[str] | None = None,
    scans: bool = False,
    limit: int | None = None,
    tune_images: int = 300,
    seed: int = 0,
    data_dir: str | None = None,
    dataset: str = "mnist",
    models_dir: str = str(DEFAULT_MODELS_DIR),
    out_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """Score models (default: every model in the store) and classical baselines on the same
    noisy MNIST test images, or with ``scans`` on the scan test set."""
    logger = get_run_logger()
    if models is None:
        models = [c.model_id for c in checkpoint.list_checkpoints(models_dir)]
    out_dir = out_dir or str(evaluate.DEFAULT_EVAL_DIR / runs.new_run_id())
    noises = noises or ["gaussian:0.5"]
    logger.info("evaluating %d models and %d baselines into %s", len(models), len(baselines or []), out_dir)
    prepared = prepare(out_dir, data_dir, dataset, noises, scans, limit, tune_images, seed)
    methods = [("noisy", "identity"), *((m, "model") for m in models),
               *((b, "baseline") for b in baselines or [])]
    parts = []
    for name, kind in methods:
        interrupt.check()  # a Ctrl-C that Prefect caught still stops the run between methods
        parts.append(score(name, kind, out_dir, prepared, models_dir, device, precision))
    summary = summarize(out_dir, parts)
    return {**summary, "dir": str(Path(out_dir))}
