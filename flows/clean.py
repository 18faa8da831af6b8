"""The folder-cleaning flow: choose the model, plan shards, clean them, report, remember.

Each task is a few lines over one library call (:mod:`denoiser.folders.run`,
:mod:`denoiser.folders.model_choice`). Each shard of a few thousand files is one task with
retries (never one task per image); shards run on the flow's task runner: a thread pool, or
Dask (``--task-runner dask``). A lock on the output folder keeps overlapping runs from
processing the same files twice; the manifest makes every run incremental, and a retried
shard skips what it already finished.

    denoiser clean scans/ cleaned/
    denoiser serve scans/ cleaned/ --interval 3600

No ``from __future__ import annotations`` here: Prefect builds a pydantic model from the
flow's signature when a deployment runs it, and a postponed annotation is not resolved there.
"""

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from denoiser import runs
from denoiser.folders import history, plan, processes, retention, workdir
from denoiser.folders import run as steps
from denoiser.folders.model_choice import ModelChoice, choose_for_clean
from denoiser.folders.read import Entry
from denoiser.folders.settings import CleanOptions, CleanRun, shard_options
from denoiser.out_tree import OutTree
from denoiser.threads import available_cpus
from flows import interrupt
from flows.adapt import adapted_choice
from flows.clean_artifacts import publish_artifacts
from flows.fleet import publish_fleet
from flows.logs import library_logs
from flows.monitor import record_history, tag_run
from flows.policy import FLOW_DEFAULTS, TASK_DEFAULTS


@task(name="resolve-model", task_run_name="resolve-model", **TASK_DEFAULTS)
@library_logs
def choose_model(run: CleanRun, options: CleanOptions) -> ModelChoice:
    return choose_for_clean(run, options)


@task(name="clean-shard", task_run_name="clean-shard-{index}", **TASK_DEFAULTS)
@library_logs
def clean_shard(index: int, entries: list[Entry], in_dir: str, out_dir: str, choice: ModelChoice, run_id: str,
                options: CleanOptions) -> dict:
    if interrupt.requested.is_set():  # Ctrl-C: the flow stops once the shards in flight are done
        return {"index": index, "interrupted": True}
    return steps.clean_shard_part(index, entries, in_dir=in_dir, out_dir=out_dir, choice=choice, run_id=run_id,
                                  options=options)


@task(name="write-report", task_run_name="write-report", **TASK_DEFAULTS)
def write_report(parts: list[dict], out_dir: str, in_dir: str, run_id: str, report: str | None,
                 choice: ModelChoice) -> dict:
    started = time.time()
    done = steps.finish_report(parts, out_dir=out_dir, run_id=run_id, report=report)
    publish_artifacts(done.frame, done.totals, run_id, in_dir, choice.why)
    return {"report": done.report, "files": int(len(done.frame)), "ood": done.flagged, "message": done.message,
            "history": history.run_row(done.frame, run_id=run_id, model_id=choice.model_id, seconds=0.0),
            "span": (started, time.time()), **done.totals}


@task(name="prune-runs", task_run_name="prune-runs", **TASK_DEFAULTS)
@library_logs
def prune_runs(out_dir: str, keep_runs: int | None, keep_days: float | None, run_id: str) -> list[str]:
    """Remove the reports, shard files and history rows of the earlier runs that the
    retention lets go (:mod:`denoiser.folders.retention`)."""
    with OutTree(out_dir, create=False) as tree:
        gone = retention.prune_clean_runs(tree, runs.Retention(keep_runs, keep_days), current=run_id)
    if gone:
        get_run_logger().info("retention: removed %d earlier runs (reports, shard files, history rows)", len(gone))
    return gone


@flow(name="clean-folder", task_runner=ThreadPoolTaskRunner(max_workers=max(2, available_cpus())), **FLOW_DEFAULTS)
def clean_folder(in_dir: str, out_dir: str, options: CleanOptions = CleanOptions(), run: CleanRun = CleanRun(),
                 run_id: str | None = None, retry_delay_seconds: float = 10) -> State:
    """Clean every image under ``in_dir`` into the same place under ``out_dir``: each file as
    ``options`` says, the run as ``run`` says (the model, the shards, the report, strictness,
    retention, adaptation to the folder). The run fails where no file could be cleaned, or
    with ``run.strict`` where any file failed."""
    flow_started = time.time()
    logger = get_run_logger()
    run_id = run_id or runs.new_run_id()
    entries = plan.plan(in_dir, out_dir, run.report)
    try:
        started = steps.begin(in_dir, out_dir, run_id, run, options)
    except workdir.FolderBusy as busy:
        logger.warning("%s; this run does nothing", busy)
        return Completed(message=str(busy), data={"status": "busy", "files": 0, "ok": 0, "error": 0, "skipped": 0,
                                                  "ood": 0, "report": None})
    except steps.STOPS as error:
        return _stopped(str(error), run_id)
    pool = processes.ShardPool(processes.processes_for(len(entries), options), run_id)
    with started, pool:  # the shards' tasks clean in its processes (tasks run elsewhere, as on Dask, do not)
        if started.removed:
            logger.info("removed %d temporary files left by an interrupted run", started.removed)
        if started.rebuilt is not None:
            logger.info("manifest rebuilt from the run reports: %d files recorded as cleaned", started.rebuilt)
        choice = choose_model(run, options)
        if run.adapt:
            choice = adapted_choice(in_dir, out_dir, choice, run, options)
        chosen_at = time.time()
        parts = plan.shards(entries, run.shard_size, pool.processes)
        logger.info("%d files in %d shards%s, model %s", len(entries), len(parts),
                    f" on {pool.processes} processes" if pool.processes else "", choice.why)
        if choice.rerun and not options.overwrite:
            logger.info("%s is %s: files another model cleaned, if any, are cleaned again with it", choice.model_id,
                        {"named": "named", "adapted": "adapted to this folder"}.get(choice.reason, "promoted"))
        shard = clean_shard.with_options(retry_delay_seconds=retry_delay_seconds)
        results = [f.result() for f in [shard.submit(i, part, in_dir, out_dir, choice, run_id, shard_options(options, run))
                                        for i, part in enumerate(parts)]]
        interrupt.check()  # a Ctrl-C that Prefect caught still stops the run here, before the report
        stops = [r["stop"] for r in results if "stop" in r]
        if stops:
            return _stopped(stops[0], run_id)
        summary = write_report(results, out_dir, in_dir, run_id, run.report, choice)
        timings = steps.run_timings(flow_started, [(started.started, chosen_at), summary["span"]], results,
                                    summary["files"])
        if summary["report"]:
            steps.save_timings(out_dir, run_id, timings)
        tracked = record_history(out_dir, summary["history"], time.time() - flow_started)
        if run.keep_runs is not None or run.keep_days is not None:
            prune_runs(out_dir, run.keep_runs, run.keep_days, run_id)
    logger.info("%(files)d files: %(ok)d ok, %(error)d error, %(skipped)d skipped, %(ood)d flagged as unlike "
                "the training digits", summary)
    logger.info("%(flow_seconds).1f s: %(library_seconds).1f s of work, %(orchestration_seconds).1f s "
                "of orchestration", timings)
    totals = {k: v for k, v in summary.items() if k not in ("span", "message", "history")}
    result = {"status": "done", "model_id": choice.model_id, "model_why": choice.why, "run_id": run_id,
              "precision": choice.precision, "precision_reason": choice.precision_reason,
              "drift": tracked["drift"], **totals}
    message = summary["message"] + (f"; drift: {'; '.join(tracked['drift'])}" if tracked["drift"] else "")
    refresh_fleet()
    return final_state(result, message, run.strict)


def refresh_fleet() -> None:
    """Under a deployment, the fleet view's artifact ``fleet`` as of this run; a problem in
    it is a warning, never the run's failure."""
    from prefect.runtime import deployment

    try:
        if deployment.id:
            publish_fleet()
    except Exception as error:  # noqa: BLE001 - the view is a convenience; the cleaning is done
        get_run_logger().warning("the fleet artifact could not be refreshed: %s", str(error).splitlines()[0][:200])


def _stopped(reason: str, run_id: str) -> State:
    """The run's state when something other than a file stopped it: Failed, in one line."""
    get_run_logger().error("the run stopped: %s", reason)
    return Failed(message=reason, data={"status": "stopped", "reason": reason, "run_id": run_id, "files": 0,
                                        "ok": 0, "error": 0, "skipped": 0, "ood": 0, "report": None})


def final_state(result: dict[str, Any], message: str, strict: bool) -> State:
    """The run's Prefect state from :func:`denoiser.folders.run.verdict`: Completed (some
    files may have failed) or Failed; its message gives the counts, the first failure and any
    drift, and the run is tagged ``has-errors`` and ``drift`` where so, so the run list in the
    UI tells what happened. A custom state name (it was "Completed with errors") hid the run
    from the deployment's Runs tab, which filters by Prefect's names."""
    kind, said = steps.verdict(result, message, strict)
    tag_run(*(["has-errors"] if result["error"] else []), *(["drift"] if result.get("drift") else []))
    if kind == "failed":
        return Failed(message=said, data=result)
    return Completed(message=said, data=result)  # Prefect's own name: the UI's lists filter by it
