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
from denoiser.adapt import stage
from denoiser.adapt.fine_tune import AdaptConfig
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR
from denoiser.evaluation import evaluate, real, recognizer
from denoiser.folders.model_choice import ModelChoice
from denoiser.folders.settings import CleanOptions, CleanRun
from denoiser.models import checkpoint
from flows import interrupt
from flows.clean import choose_model
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


@task(name="prepare-reader", task_run_name="prepare-reader", **TASK_DEFAULTS)
@library_logs
def prepare_reader(models_dir: str, data_dir: str | None) -> str:
    return str(recognizer.ensure_reader(models_dir, data_dir))


@task(name="adapt-to-folder", task_run_name="adapt-to-folder", **TASK_DEFAULTS)
@library_logs
def adapt_to_folder(folder: str, parent: ModelChoice, minutes: float, models_dir: str, data_dir: str | None,
                    run_dir: str, device: str, precision: str) -> dict:
    return stage.adapt_folder(folder, parent.checkpoint(), models_dir=models_dir, run_dir=run_dir, data_dir=data_dir,
                              config=AdaptConfig(minutes=minutes), device=device, precision=precision)


@task(name="score-real", task_run_name="score-real", **TASK_DEFAULTS)
@library_logs
def score_real(folder: str, out_dir: str, choices: dict[str, ModelChoice], reader: str, limit: int | None,
               device: str) -> dict:
    found = real.labelled_scans(folder, limit)
    methods = {**real.CLASSICAL, **{name: real.model_method(c, device=device) for name, c in choices.items()}}
    summary = real.score_real(found, out_dir, methods, recognizer.load_reader(reader))
    create_table_artifact(key="evaluation-real", description=f"Digits read correctly after each method ({folder})",
                          table=[{k: v for k, v in m.items() if k != "per_class"} for m in summary["methods"]])
    return summary


@flow(name="evaluate-real", **FLOW_DEFAULTS)
def evaluate_real_folder(folder: str, models: list[str] | None = None, adapt: bool = False, adapt_minutes: float = 2.5,
                         limit: int | None = None, data_dir: str | None = None,
                         models_dir: str = str(DEFAULT_MODELS_DIR), runs_dir: str = str(DEFAULT_RUNS_DIR),
                         out_dir: str | None = None, device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """Score the scans as they are, classical filters, the model ``clean`` uses (and ``models``,
    and with ``adapt`` that model adapted to the folder) on a labelled folder of real scans by
    how often a digit reader trained on MNIST reads each one's outputs right."""
    out_dir = out_dir or str(evaluate.DEFAULT_EVAL_DIR / f"real-{runs.new_run_id()}")
    reader = prepare_reader(models_dir, data_dir)
    options = CleanOptions(device=device, precision=precision)
    chosen = choose_model(CleanRun(models_dir=models_dir, data_dir=data_dir, runs_dir=runs_dir), options)
    choices = {f"clean ({chosen.model_id})": chosen}
    for model in models or []:
        extra = ModelChoice.of(checkpoint.resolve_checkpoint(model, models_dir), device=device, precision=precision)
        choices[f"model ({extra.model_id})"] = extra
    if adapt:
        interrupt.check()
        outcome = adapt_to_folder(folder, chosen, adapt_minutes, models_dir, data_dir,
                                  str(Path(runs_dir) / f"adapt-{runs.new_run_id()}"), device, precision)
        if outcome["model_id"] is not None:
            adapted = chosen.adapted(checkpoint.resolve_checkpoint(outcome["model_id"], models_dir))
            gate = "passed" if outcome["passed"] else "refused"
            choices[f"clean --adapt ({adapted.model_id}, gate {gate})"] = adapted
    interrupt.check()
    summary = score_real(folder, out_dir, choices, reader, limit, device)
    return {**summary, "dir": out_dir}
