"""Retention: what old runs leave behind, pruned to the newest runs or the recent ones.

A :class:`Retention` keeps the newest ``keep_runs`` runs, and (or) the runs younger than
``keep_days``; a run either rule lets go is removed. Nothing is ever removed from the
current run, and nothing the product did not write.

* A folder's cleaning runs (:func:`prune_clean_runs`): ``OUT_DIR/.denoiser/reports/<run>.parquet``,
  ``OUT_DIR/.denoiser/runs/<run>/`` (shard reports, timings) and the run's row in
  ``history.parquet``, for the runs the history or the ledger records (the product made
  them), removed by descriptor: a link in the way is left alone, never followed. The
  manifest, which says what was cleaned, is kept whole; only a ``--rebuild-manifest``
  (which reads the shard reports) then knows less.
* The MNIST pipeline's run folders (:func:`prune_pipeline_runs`): ``data/runs/<run>/``, and
  the cached training arrays (:mod:`denoiser.stages`) that no kept run uses.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import time
from dataclasses import dataclass

import pandas as pd

from denoiser import history
from denoiser.images import ImageError
from denoiser.out_tree import OutTree
from denoiser.workdir import REPORTS, RUNS, forget_runs, recorded_runs

log = logging.getLogger(__name__)

#: Names of run folders the product makes: ``20261124-170302-a1b2c3`` (a run id, optionally
#: after a prefix such as ``default-model-``).
RUN_NAME = re.compile(r"^(?:[a-z-]+-)?\d{8}-\d{6}-[0-9a-f]{6}$")
DAY = 86400.0
#: Under the runs folder: arrays shared by runs, named by their content's digest. One is
#: removed only when no run uses it and none has for this long (a run being set up may be
#: about to).
CACHE_DIR = "cache"
CACHE_GRACE = 3600.0


@dataclass(frozen=True)
class Retention:
    """Which runs to keep: the newest ``keep_runs``, those younger than ``keep_days``; None
    for either means no limit of that kind."""

    keep_runs: int | None = None
    keep_days: float | None = None

    def __post_init__(self) -> None:
        if self.keep_runs is not None and self.keep_runs < 1:
            raise ValueError(f"keep_runs must be >= 1 (or unset), got {self.keep_runs}")
        if self.keep_days is not None and not self.keep_days > 0:
            raise ValueError(f"keep_days must be > 0 (or unset), got {self.keep_days}")

    @property
    def active(self) -> bool:
        return self.keep_runs is not None or self.keep_days is not None

    def expired(self, runs: dict[str, float], *, now: float | None = None) -> list[str]:
        """Of ``runs`` (run id -> time it ran, seconds since the epoch), those to remove."""
        now = time.time() if now is None else now
        newest_first = sorted(runs, key=lambda run: (runs[run], run), reverse=True)
        gone = set(newest_first[self.keep_runs:]) if self.keep_runs is not None else set()
        if self.keep_days is not None:
            gone |= {run for run, when in runs.items() if now - when > self.keep_days * DAY}
        return sorted(gone)


def prune_clean_runs(tree: OutTree, retention: Retention, *, current: str | None = None,
                     now: float | None = None) -> list[str]:
    """Remove the cleaning runs into OUT_DIR that ``retention`` lets go (never ``current``);
    the run ids removed."""
    if not retention.active:
        return []
    past = history.read_history(tree)
    when = {str(run): pd.Timestamp(t).timestamp() for run, t in zip(past["run_id"], past["time"], strict=True)}
    for run, started in recorded_runs(tree).items():
        when.setdefault(run, started)
    gone = _expired_but_current(retention, when, current, now)
    for run in gone:
        _remove_run(tree, run)
    kept = past[~past["run_id"].isin(gone)]
    if len(kept) < len(past):
        history.write_history(tree, kept.reset_index(drop=True))
    forget_runs(tree, set(gone))
    return gone


def _remove_run(tree: OutTree, run: str) -> None:
    """A run's report and folder, by descriptor; what is not the product's kind of entry (a
    link planted there) is left, with a warning."""
    if not RUN_NAME.match(run):
        return
    try:
        report = tree.lstat(f"{REPORTS}/{run}.parquet")
        if report is not None and stat.S_ISREG(report.st_mode):
            tree.unlink(f"{REPORTS}/{run}.parquet")
        tree.remove_tree(f"{RUNS}/{run}")
    except (ImageError, OSError) as error:
        log.warning("retention left run %s in place: %s", run, str(error).splitlines()[0])


def _expired_but_current(retention: Retention, when: dict[str, float], current: str | None,
                         now: float | None) -> list[str]:
    """The expired runs; ``current``, if given, counts as the newest run and is never one."""
    if current is not None:
        when = {**when, current: math.inf}
    return [run for run in retention.expired(when, now=now) if run != current]


def prune_pipeline_runs(runs_dir: str | os.PathLike[str], retention: Retention, *, current: str | None = None,
                        now: float | None = None) -> list[str]:
    """Remove the MNIST pipeline's run folders in ``runs_dir`` that ``retention`` lets go (never
    ``current``), then the cached arrays no remaining run uses; the run ids removed. Folders
    are removed by descriptor: a link among them is left alone."""
    if not retention.active or not os.path.isdir(runs_dir):
        return []
    with OutTree(runs_dir, create=False) as tree:
        when = {}
        for name in tree.listdir():
            info = tree.lstat(name)
            if info is not None and stat.S_ISDIR(info.st_mode) and RUN_NAME.match(name):
                when[name] = info.st_mtime
        gone = _expired_but_current(retention, when, current, now)
        for run in gone:
            try:
                tree.remove_tree(run)
            except (ImageError, OSError) as error:
                log.warning("retention left run %s in place: %s", run, str(error).splitlines()[0])
        used = set()
        for run in tree.listdir():
            try:
                used.add(os.path.basename(json.loads(tree.read_bytes(f"{run}/stages/ingest.json"))["train_images"]))
            except (OSError, ValueError, KeyError, TypeError, ImageError):
                continue
        now = time.time() if now is None else now
        for name in tree.listdir(CACHE_DIR) if gone else ():
            info = tree.lstat(f"{CACHE_DIR}/{name}")
            if (name.endswith(".npy") and name not in used and info is not None and stat.S_ISREG(info.st_mode)
                    and now - info.st_mtime > CACHE_GRACE):
                tree.unlink(f"{CACHE_DIR}/{name}")
    return gone
