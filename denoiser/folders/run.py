"""A cleaning run's steps over OUT_DIR, each a plain function that the cleaning flow's tasks
call (:mod:`flows.clean`), and :func:`clean_folder`, which runs them all without Prefect:

    with begin(in_dir, out_dir, run_id, run) as started:      # lock, ledger, temporaries, manifest
        choice = choose_for_clean(run, options)                # denoiser.folders.model_choice
        parts = [clean_part(i, p, in_dir=in_dir, out_dir=out_dir, choice=choice, run_id=run_id,
                            options=options) for i, p in enumerate(shards(entries, run.shard_size))]
        done = finish_report(parts, out_dir=out_dir, run_id=run_id, report=run.report)

A run that something other than a file stops (a full disk, a damaged manifest, a link where
the working folder keeps its files: :data:`STOPS`) says so in one line; bad files are rows.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from denoiser.files import write_parquet
from denoiser.folders import manifest, processes, shard, workdir
from denoiser.folders.model_choice import ModelChoice
from denoiser.folders.read import Entry
from denoiser.folders.report import counts, join_reports, parquet_bytes, report_frame
from denoiser.folders.settings import CleanOptions, CleanRun, shard_options
from denoiser.folders.steps import ShardTimings
from denoiser.folders.summary import state_message
from denoiser.folders.workdir import REPORTS, RUNS, DiskFull, OutputFolderError
from denoiser.out_tree import OutTree

#: What stops a run rather than one file.
STOPS = (DiskFull, manifest.ManifestError, OutputFolderError)


@dataclass
class Started:
    """A run holding OUT_DIR: its tree and lock, released on leaving the ``with`` block."""

    tree: OutTree
    lock: workdir.folder_lock
    removed: int = 0  # temporaries an interrupted run left, swept
    rebuilt: int | None = None  # rows of a rebuilt manifest
    started: float = field(default_factory=time.time)

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__()
        self.tree.close()


def begin(in_dir: str, out_dir: str, run_id: str, run: CleanRun, options: CleanOptions = CleanOptions()) -> Started:
    """OUT_DIR made, checked and locked for this run (:class:`denoiser.folders.workdir.FolderBusy`
    if another run holds it), the run noted in the ledger, what a killed run left swept, the
    manifest checked (or rebuilt with ``run.rebuild_manifest``)."""
    tree = workdir.open_tree(out_dir)
    try:
        lock = workdir.folder_lock(tree)
    except BaseException:
        tree.close()
        raise
    started = Started(tree, lock)
    try:
        workdir.record_run(tree, run_id)
        started.removed = workdir.remove_stale_temporaries(tree, run.report)
        if run.rebuild_manifest:
            started.rebuilt = manifest.rebuild(tree, in_dir, workdir.shard_reports(tree),
                                               max_bytes=int(options.max_file_mb * 10**6))
        else:
            manifest.Manifest.of(tree, create=False).check()
    except BaseException:
        started.__exit__()
        raise
    return started


def clean_part(index: int, entries: list[Entry], *, in_dir: str, out_dir: str, choice: ModelChoice, run_id: str,
               options: CleanOptions) -> dict[str, Any]:
    """Clean one shard and keep its report rows in ``.denoiser/runs/<run>/shard-NNNNN.parquet``:
    the shard's counts and timings, or ``{"stop": reason}`` when the run must stop."""
    clock = ShardTimings()
    try:
        rows = shard.clean_shard(entries, in_dir=in_dir, out_dir=out_dir, model=choice, run_id=run_id, options=options,
                           timings=clock)
        frame = report_frame(rows)
        rel = f"{RUNS}/{run_id}/shard-{index:05d}.parquet"
        with OutTree(out_dir, create=False) as tree:
            tree.write_bytes(rel, parquet_bytes(frame))
    except STOPS as error:  # what was written is recorded; the run stops
        return {"index": index, "stop": str(error).splitlines()[0]}
    clock.ended = time.time()
    return {"index": index, "rows": rel, "timings": clock.to_dict(), **counts(frame)}


def clean_shard_part(index: int, entries: list[Entry], *, in_dir: str, out_dir: str, choice: ModelChoice,
                     run_id: str, options: CleanOptions) -> dict[str, Any]:
    """:func:`clean_part` in a worker process of the run's pool
    (:mod:`denoiser.folders.processes`), or in this process where it has none."""
    pool = processes.pool_for(run_id)
    return pool.call(f"shard {index}", clean_part, index, entries, in_dir=in_dir, out_dir=out_dir, choice=choice,
                     run_id=run_id, options=_in_worker(options) if pool.processes else options)


def _in_worker(options: CleanOptions) -> CleanOptions:
    """A worker process reads and writes with one thread each: it has one core."""
    return replace(options, workers=1, processes=0)


@dataclass(frozen=True)
class Finished:
    frame: pd.DataFrame  # the run's report
    totals: dict[str, int]  # ok, error, skipped
    report: str | None  # where it was written; None when the run cleaned and failed nothing
    flagged: int  # cleaned files unlike the training digits
    message: str  # one line: the counts and the first failure


def finish_report(parts: list[dict[str, Any]], *, out_dir: str, run_id: str, report: str | None) -> Finished:
    """The shard reports joined into the run's report, written to ``report`` (default:
    ``.denoiser/reports/<run>.parquet``). A run that cleaned nothing and failed nothing (a
    scheduled run that found nothing new) keeps no report and no shard files."""
    path = report or str(Path(out_dir) / REPORTS / f"{run_id}.parquet")
    with OutTree(out_dir, create=False) as tree:
        frame = join_reports([tree.read_bytes(p["rows"]) for p in sorted(parts, key=lambda p: p["index"])])
        totals = counts(frame)
        if totals["ok"] + totals["error"]:
            inside = _inside(path, out_dir)
            if inside is not None:  # by descriptor, like everything under OUT_DIR
                tree.write_bytes(inside, parquet_bytes(frame))
            else:  # a path the user named
                write_parquet(frame, path)
        else:
            tree.remove_tree(f"{RUNS}/{run_id}")
            path = None
    flagged = int(frame["ood"].fillna(False).astype(bool).sum())
    return Finished(frame, totals, path, flagged, state_message(totals, flagged, frame))


def _inside(path: str, out_dir: str) -> str | None:
    """``path`` relative to OUT_DIR if it lies under it, else None."""
    try:
        return Path(path).relative_to(out_dir).as_posix()
    except ValueError:
        return None


def save_timings(out_dir: str, run_id: str, timings: dict[str, Any]) -> None:
    with OutTree(out_dir, create=False) as tree:
        tree.write_bytes(f"{RUNS}/{run_id}/timings.json", json.dumps(timings, indent=2).encode())


def run_timings(flow_started: float, spans: list[tuple[float, float]], parts: list[dict[str, Any]],
                files: int) -> dict[str, Any]:
    """Where a run's time went. ``library_seconds`` is wall time during which some library
    work ran (``spans``: choosing the model, the report; and every shard); the rest of the
    run's wall time is ``orchestration_seconds``: task submission, state changes, the API."""
    spans = [*spans, *((p["timings"]["started"], p["timings"]["ended"]) for p in parts)]
    busy, reach = 0.0, -math.inf
    for start, end in sorted(spans):  # the length of the union of the spans
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    flow_seconds = time.time() - flow_started
    steps = {step: round(sum(p["timings"][step] for p in parts), 3) for step in ("decode", "model", "encode")}
    return {"flow_seconds": round(flow_seconds, 3), "library_seconds": round(busy, 3),
            "orchestration_seconds": round(flow_seconds - busy, 3), "files": files, **steps}


def verdict(result: dict[str, Any], message: str, strict: bool) -> tuple[str, str]:
    """How the run ended: ``("failed", why)`` where no file could be cleaned, or with
    ``strict`` where any failed; ``("errors", message)`` where some failed; else ``("ok",
    message)``."""
    if result["files"] and result["ok"] + result["skipped"] == 0:
        return "failed", f"no file could be cleaned: {message}"
    if result["error"] and strict:
        return "failed", f"strict: {message}"
    return ("errors" if result["error"] else "ok"), message


def clean_folder(in_dir: str, out_dir: str, options: CleanOptions = CleanOptions(),
                 run: CleanRun = CleanRun(), run_id: str | None = None) -> Finished:
    """Clean every image under ``in_dir`` into ``out_dir`` in this process, without Prefect:
    the steps above in order, and the run's row in the folder's history (no adaptation, no
    retries; the flow ``clean-folder`` adds those, and the UI). Raises
    :class:`denoiser.folders.workdir.FolderBusy` if another run holds the folder, and the
    :data:`STOPS` errors where the run cannot go on."""
    from denoiser.folders import history, plan
    from denoiser.folders.model_choice import choose_for_clean
    from denoiser.runs import new_run_id

    run_id = run_id or new_run_id()
    entries = plan.plan(in_dir, out_dir, run.report)
    with begin(in_dir, out_dir, run_id, run, options) as started:
        with processes.ShardPool(processes.processes_for(len(entries), options), run_id) as pool:
            choice = choose_for_clean(run, options)
            each = dict(in_dir=in_dir, out_dir=out_dir, choice=choice, run_id=run_id,
                        options=shard_options(options, run))
            shards = plan.shards(entries, run.shard_size, pool.processes)
            with ThreadPoolExecutor(max(1, pool.processes)) as side_by_side:  # as the flow's tasks do
                parts = list(side_by_side.map(lambda i: clean_shard_part(i, shards[i], **each), range(len(shards))))
        stopped = next((p["stop"] for p in parts if "stop" in p), None)
        if stopped is not None:
            raise OutputFolderError(stopped)
        done = finish_report(parts, out_dir=out_dir, run_id=run_id, report=run.report)
        row = history.run_row(done.frame, run_id=run_id, model_id=choice.model_id, seconds=0.0)
        history.append_run(started.tree, history.timed(row, time.time() - started.started))
    return done
