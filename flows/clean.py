"""The folder-cleaning flow: resolve the model, plan shards, clean them, report.

Each shard of a few thousand files is one task with retries (never one task per image);
shards run on the flow's task runner: a thread pool, or Dask (``--task-runner dask``). A
lock on the output folder keeps overlapping runs (a schedule firing while the last run is
still going) from processing the same files twice; the manifest makes every run
incremental, and a retried shard skips what it already finished.

    denoiser clean scans/ cleaned/
    denoiser serve scans/ cleaned/ --interval 3600

No ``from __future__ import annotations`` here: Prefect builds a pydantic model from the
flow's signature when a deployment runs it, and a postponed ``Literal[...]`` annotation is
not resolved there ("not fully defined").
"""

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from denoiser import (checkpoint, cleaning, history, manifest, quality_net, registry, retention, run_summary,
                      shape_training, shapes, stages, workdir)
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, DEVICES, PRECISIONS, TONES
from denoiser.clean_report import counts, join_reports, parquet_bytes, report_frame
from denoiser.data import DataError
from denoiser.device import resolve_device
from denoiser.file_steps import ShardTimings
from denoiser.images import Entry
from denoiser.out_tree import OutTree
from denoiser.precision import resolve_precision
from denoiser.report import write_parquet
from denoiser.safe_fs import MAX_FILE_MB
from denoiser.workdir import REPORTS, RUNS, DiskFull, OutputFolderError
from flows import interrupt
from flows.adapt import model_for_folder
from flows.clean_artifacts import publish_artifacts
from flows.logs import library_logs
from flows.monitor import record_history
from flows.policy import FLOW_DEFAULTS, TASK_DEFAULTS

SHARD_SIZE = 2000


@task(name="resolve-model", task_run_name="resolve-model", **TASK_DEFAULTS)
@library_logs
def resolve_model(model: str | None, models_dir: str, data_dir: str | None, runs_dir: str,
                  device: str, precision: str = "auto") -> dict:
    """The model to clean with (:func:`denoiser.registry.choose_clean_model`): ``model`` (id
    or path), else the one promoted for clean, else the scan recipe's, trained on MNIST
    first if the store lacks it (the train-or-load stage); and the precision to run it in,
    decided once for all shards."""
    started = time.time()
    choice = registry.choose_clean_model(model, models_dir)
    found = choice.checkpoint
    if found is None:
        get_run_logger().info("no model is promoted for clean and the store %s lacks the scan recipe's "
                              "model: training it (6-15 minutes on 2 CPU cores, then about 5 more for the "
                              "digit-shape model and the quality estimate)", models_dir)
        found = stages.train_clean_default(models_dir, runs_dir=runs_dir, data_dir=data_dir, device=device,
                                           precision=precision)
        shape_training.ensure_shapes(models_dir, data_dir, cleaner=found)  # MNIST is at hand: the OOD flag too
        quality_net.ensure_quality(models_dir, found, data_dir)  # and the learned PSNR estimate
    cleaning.cached_model(found, resolve_device(device))  # loaded and checked once, before any shard
    shape_model = shape_check(models_dir, data_dir, found)
    estimator = quality_net.find_quality(models_dir, found.model_id)
    if estimator is None:
        get_run_logger().info("the store %s has no learned quality estimate for %s: psnr_est is the analytic one, "
                              "which misses more on blurred, JPEG or dusty scans (`denoiser models quality` "
                              "trains one in about 4 minutes)", models_dir, found.model_id)
    else:
        get_run_logger().info("psnr_est: the learned estimate for %s (%s)", found.model_id, estimator)
    chosen = resolve_precision(precision, resolve_device(device))
    get_run_logger().info("denoising in %s (%s)", chosen.name, chosen.reason)
    return {"model_id": found.model_id, "weights": str(found.weights), "reason": choice.reason,
            "shapes": str(shape_model) if shape_model is not None else None,
            "quality": str(estimator) if estimator is not None else None,
            **chosen.to_dict(),
            "why": registry.Choice(found, choice.reason, choice.rerun).describe(),
            "rerun": choice.rerun, "span": (started, time.time())}


def shape_check(models_dir: str, data_dir: str | None, found: checkpoint.Checkpoint) -> Path | None:
    """The store's digit-shape model, calibrated for ``found`` if it was not and MNIST is at
    hand (never downloaded for this); None, said in the log, when the store has none."""
    logger = get_run_logger()
    weights = shapes.find_shapes(models_dir)
    if weights is None:
        logger.info("the store %s has no digit-shape model: letters and other non-digits are not flagged as "
                    "OOD (`denoiser models shapes` trains one in about 3 minutes)", models_dir)
        return None
    if cleaning.cached_shapes(str(weights)).calibrated_for(found.model_id) is None:
        try:
            shape_training.ensure_shapes(models_dir, data_dir, cleaner=found, download=False)
        except DataError as error:
            logger.warning("the digit-shape model is not calibrated for %s and MNIST is not at hand (%s): its "
                           "threshold was set on clean digits and flags more outputs of noisy ones",
                           found.model_id, str(error).splitlines()[0])
    return weights


#: What stops a run rather than one file: said in one line as the run's state, no traceback.
STOPS = (DiskFull, manifest.ManifestError, OutputFolderError)


@task(name="clean-shard", task_run_name="clean-shard-{index}", **TASK_DEFAULTS)
@library_logs
def clean_shard(index: int, entries: list[Entry], in_dir: str, out_dir: str, model: dict,
                run_id: str, options: dict) -> dict:
    if interrupt.requested.is_set():  # Ctrl-C: the flow stops once the shards in flight are done
        return {"index": index, "interrupted": True}
    clock = ShardTimings()
    weights = Path(model["weights"])
    found = checkpoint.resolve_checkpoint(str(weights), weights.parent)
    try:
        rows = cleaning.clean_shard(entries, in_dir=in_dir, out_dir=out_dir, checkpoint=found, run_id=run_id,
                                    options=cleaning.CleanOptions(**options, rerun_other_models=model["rerun"],
                                                                  shapes=model.get("shapes"),
                                                                  quality=model.get("quality")),
                                    timings=clock, model_reason=model["reason"])
        rel = f"{RUNS}/{run_id}/shard-{index:05d}.parquet"
        with OutTree(out_dir, create=False) as tree:
            tree.write_bytes(rel, parquet_bytes(report_frame(rows)))
    except STOPS as error:  # the run stops; what was written is recorded
        return {"index": index, "stop": str(error).splitlines()[0]}
    frame = report_frame(rows)
    clock.ended = time.time()
    return {"index": index, "rows": rel, "timings": clock.to_dict(), **counts(frame)}


@task(name="write-report", task_run_name="write-report", **TASK_DEFAULTS)
def write_report(shard_results: list[dict], report: str, run_id: str, in_dir: str, out_dir: str,
                 model: dict) -> dict:
    """Join the shard reports into the run's report and publish its artifacts. A run that
    cleaned nothing and failed nothing (a scheduled run that found nothing new) keeps no
    report and no shard files: its row in the folder's history says what it found."""
    started = time.time()
    with OutTree(out_dir, create=False) as tree:
        frame = join_reports([tree.read_bytes(r["rows"]) for r in sorted(shard_results, key=lambda r: r["index"])])
        totals = counts(frame)
        if totals["ok"] + totals["error"]:
            inside = _inside(report, out_dir)
            if inside is not None:  # the default: by descriptor, like everything under OUT_DIR
                tree.write_bytes(inside, parquet_bytes(frame))
            else:  # a path the user named with --report
                write_parquet(frame, report)
        else:
            tree.remove_tree(f"{RUNS}/{run_id}")
            report = None
    publish_artifacts(frame, totals, run_id, in_dir, model["why"])
    ood = int(frame["ood"].fillna(False).astype(bool).sum())
    return {"report": report, "files": int(len(frame)), "ood": ood, "span": (started, time.time()),
            "message": run_summary.state_message(totals, ood, frame),
            "history": history.run_row(frame, run_id=run_id, model_id=model["model_id"], seconds=0.0),
            **totals}


def _inside(path: str, out_dir: str) -> str | None:
    """``path`` relative to OUT_DIR if it lies under it, else None."""
    try:
        return Path(path).relative_to(out_dir).as_posix()
    except ValueError:
        return None


@task(name="prune-runs", task_run_name="prune-runs", **TASK_DEFAULTS)
@library_logs
def prune_runs(out_dir: str, keep_runs: int | None, keep_days: float | None, run_id: str) -> list[str]:
    """Remove the reports, shard files and history rows of the runs into ``out_dir`` that the
    retention lets go (:mod:`denoiser.retention`)."""
    with OutTree(out_dir, create=False) as tree:
        gone = retention.prune_clean_runs(tree, retention.Retention(keep_runs, keep_days), current=run_id)
    if gone:
        get_run_logger().info("retention: removed %d earlier runs (reports, shard files, history rows)",
                              len(gone))
    return gone


def default_report_path(out_dir: str, run_id: str) -> str:
    return str(Path(out_dir) / REPORTS / f"{run_id}.parquet")


@flow(name="clean-folder", task_runner=ThreadPoolTaskRunner(max_workers=2), **FLOW_DEFAULTS)
def clean_folder(
    in_dir: str,
    out_dir: str,
    model: str | None = None,
    report: str | None = None,
    batch_size: int | None = None,
    shard_size: int = SHARD_SIZE,
    overwrite: bool = False,
    device: Literal[DEVICES] = "auto",
    precision: Literal[PRECISIONS] = "auto",
    encode_processes: int = 0,
    png_level: int = 6,
    tones: Literal[TONES] = "keep",
    max_file_mb: float = MAX_FILE_MB,
    max_pixels: int = cleaning.MAX_PIXELS,
    rebuild_manifest: bool = False,
    models_dir: str = str(DEFAULT_MODELS_DIR),
    data_dir: str | None = None,
    runs_dir: str = str(DEFAULT_RUNS_DIR),
    run_id: str | None = None,
    retry_delay_seconds: float = 10,
    adapt_to_folder: bool = False,
    adapt_minutes: float = 2.5,
    strict: bool = False,
    keep_runs: int | None = None,
    keep_days: float | None = None,
) -> State:
    """Clean every image under ``in_dir`` into the same place under ``out_dir``; with
    ``adapt_to_folder``, with a model adapted to the folder's noise (made on the first run,
    made again when the noise drifts, kept only where it passes the gate). The run fails
    where no file could be cleaned, or with ``strict`` where any file failed. With
    ``keep_runs`` or ``keep_days``, earlier runs' reports and history rows beyond them are
    removed (:mod:`denoiser.retention`)."""
    flow_started = time.time()
    logger = get_run_logger()
    run_id = run_id or stages.new_run_id()
    entries = cleaning.plan(in_dir, out_dir, report)
    try:
        tree = workdir.open_tree(out_dir)  # makes and checks OUT_DIR and .denoiser first
        lock = workdir.folder_lock(tree)
    except workdir.FolderBusy as busy:
        tree.close()
        logger.warning("%s; this run does nothing", busy)
        return Completed(message=str(busy), data={"status": "busy", "files": 0, "ok": 0, "error": 0,
                                                  "skipped": 0, "ood": 0, "report": None})
    except STOPS as error:
        return _stopped(str(error), run_id)
    with tree, lock:
        try:
            workdir.record_run(tree, run_id)
            removed = workdir.remove_stale_temporaries(tree, report)
            if removed:
                logger.info("removed %d temporary files left by an interrupted run", removed)
            if rebuild_manifest:
                kept = manifest.rebuild(tree, in_dir, workdir.shard_reports(tree),
                                        max_bytes=int(max_file_mb * 10**6))
                logger.info("manifest rebuilt from the run reports: %d files recorded as cleaned", kept)
            else:
                manifest.Manifest.of(tree, create=False).check()
        except STOPS as error:
            return _stopped(str(error), run_id)
        chosen = resolve_model(model, models_dir, data_dir, runs_dir, device, precision)
        if adapt_to_folder:
            chosen = model_for_folder(in_dir, out_dir, chosen, minutes=adapt_minutes, models_dir=models_dir,
                                      data_dir=data_dir, runs_dir=runs_dir, device=device,
                                      precision=precision)
        parts = cleaning.shards(entries, shard_size)
        logger.info("%d files in %d shards, model %s", len(entries), len(parts), chosen["why"])
        if chosen["rerun"] and not overwrite:
            how = {"named": "named", "adapted": "adapted to this folder"}.get(chosen["reason"],
                                                                             "promoted for clean")
            logger.info("%s is %s: files another model cleaned, if any, are cleaned again with it",
                        chosen["model_id"], how)
        shard_task = clean_shard.with_options(retry_delay_seconds=retry_delay_seconds)
        options = dict(batch_size=batch_size, overwrite=overwrite, device=device, tones=tones,
                       precision=chosen["precision"], encode_processes=encode_processes,
                       png_level=png_level, max_file_mb=max_file_mb, max_pixels=max_pixels)
        futures = [shard_task.submit(i, part, in_dir, out_dir, chosen, run_id, options)
                   for i, part in enumerate(parts)]
        results = [future.result() for future in futures]
        interrupt.check()  # a Ctrl-C that Prefect caught still stops the run here, before the report
        stops = [r["stop"] for r in results if "stop" in r]
        if stops:
            return _stopped(stops[0], run_id)
        report_path = report or default_report_path(out_dir, run_id)
        summary = write_report(results, report_path, run_id, in_dir, out_dir, chosen)
        timings = run_timings(flow_started, chosen, results, summary)
        if summary["report"]:
            tree.write_bytes(f"{RUNS}/{run_id}/timings.json", json.dumps(timings, indent=2).encode())
        tracked = record_history(out_dir, summary["history"], time.time() - flow_started)
        if keep_runs is not None or keep_days is not None:
            prune_runs(out_dir, keep_runs, keep_days, run_id)
    logger.info("%(files)d files: %(ok)d ok, %(error)d error, %(skipped)d skipped, %(ood)d flagged as unlike "
                "the training digits", summary)
    logger.info("%(flow_seconds).1f s: %(library_seconds).1f s of work, %(orchestration_seconds).1f s "
                "of orchestration", timings)
    totals = {k: v for k, v in summary.items() if k not in ("span", "message", "history")}
    result = {"status": "done", "model_id": chosen["model_id"], "model_why": chosen["why"], "run_id": run_id,
              "precision": chosen["precision"], "precision_reason": chosen["precision_reason"], **totals}
    message = summary["message"] + (f"; drift: {'; '.join(tracked['drift'])}" if tracked["drift"] else "")
    return final_state({**result, "drift": tracked["drift"]}, message, strict)


def _stopped(reason: str, run_id: str) -> State:
    """The run's state when something other than a file stopped it (a full disk, a damaged
    manifest, a link where the working folder goes): Failed, its message the one line."""
    get_run_logger().error("the run stopped: %s", reason)
    return Failed(message=reason, data={"status": "stopped", "reason": reason, "run_id": run_id, "files": 0,
                                        "ok": 0, "error": 0, "skipped": 0, "ood": 0, "report": None})


def final_state(result: dict[str, Any], message: str, strict: bool) -> State:
    """The run's final state: Failed where no file could be cleaned, or with ``strict`` where
    any failed; "Completed with errors" where some failed; else Completed. Its message gives
    the counts and the first failure, so the run list in the UI tells what happened."""
    if result["files"] and result["ok"] + result["skipped"] == 0:
        return Failed(message=f"no file could be cleaned: {message}", data=result)
    if result["error"] and strict:
        return Failed(message=f"strict: {message}", data=result)
    if result["error"]:
        return Completed(name="Completed with errors", message=message, data=result)
    return Completed(message=message, data=result)


def run_timings(flow_started: float, chosen: dict, shards: list[dict], summary: dict) -> dict:
    """Where a run's time went. ``library_seconds`` is wall time during which some library
    work ran (resolving the model, a shard, the report); the rest of the flow's wall time is
    ``orchestration_seconds``: task submission, state changes, the API."""
    spans = [tuple(chosen["span"]), tuple(summary["span"])]
    spans += [(r["timings"]["started"], r["timings"]["ended"]) for r in shards]
    busy, reach = 0.0, -math.inf
    for start, end in sorted(spans):  # the length of the union of the spans
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    flow_seconds = time.time() - flow_started
    parts = {part: round(sum(r["timings"][part] for r in shards), 3)
             for part in ("decode", "model", "encode")}
    return {"flow_seconds": round(flow_seconds, 3), "library_seconds": round(busy, 3),
            "orchestration_seconds": round(flow_seconds - busy, 3),
            "report_seconds": round(summary["span"][1] - summary["span"][0], 3),
            "files": summary["files"], **parts}
