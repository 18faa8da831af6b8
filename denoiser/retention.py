"""Retention: what old runs leave behind, pruned to the newest runs or the recent ones.

A :class:`Retention` keeps the newest ``keep_runs`` runs, and (or) the runs younger than
``keep_days``; a run either rule lets go is removed. Nothing is ever removed from the
current run, and nothing the product did not write.

* A folder's cleaning runs (:func:`prune_clean_runs`): ``OUT_DIR/.denoiser/reports/<run>.parquet``,
  ``OUT_DIR/.denoiser/runs/<run>/`` (shard reports, timings) and the run's row in
  ``history.parquet``. The manifest, which says what was cleaned, is kept whole; only a
  ``--rebuild-manifest`` (which reads the shard reports) then knows less.
* The MNIST pipeline's run folders (:func:`prune_pipeline_runs`): ``data/runs/<run>/``, and
  the cached training arrays (:mod:`denoiser.stages`) that no kept run uses.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from denoiser import history
from denoiser.files import read_json
from denoiser.report import write_parquet
from denoiser.workdir import work_dir

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


def prune_clean_runs(out_dir: str | os.PathLike[str], retention: Retention, *, current: str | None = None,
                     now: float | None = None) -> list[str]:
    """Remove the cleaning runs into ``out_dir`` that ``retention`` lets go (never ``current``);
    the run ids removed."""
    if not retention.active:
        return []
    work = work_dir(out_dir)
    reports, runs_dir = work / "reports", work / "runs"
    past = history.read_history(out_dir)
    when = {str(run): pd.Timestamp(t).timestamp() for run, t in zip(past["run_id"], past["time"], strict=True)}
    for path in [*reports.glob("*.parquet"), *runs_dir.glob("*")]:
        name = path.name.removesuffix(".parquet")
        if RUN_NAME.match(name) and name not in when:
            when[name] = path.stat().st_mtime
    gone = _expired_but_current(retention, when, current, now)
    for run in gone:
        (reports / f"{run}.parquet").unlink(missing_ok=True)
        shutil.rmtree(runs_dir / run, ignore_errors=True)
    kept = past[~past["run_id"].isin(gone)]
    if len(kept) < len(past):
        write_parquet(kept.reset_index(drop=True), history.history_path(out_dir))
    return gone


def _expired_but_current(retention: Retention, when: dict[str, float], current: str | None,
                         now: float | None) -> list[str]:
    """The expired runs; ``current``, if given, counts as the newest run and is never one."""
    if current is not None:
        when = {**when, current: math.inf}
    return [run for run in retention.expired(when, now=now) if run != current]


def prune_pipeline_runs(runs_dir: str | os.PathLike[str], retention: Retention, *, current: str | None = None,
                        now: float | None = None) -> list[str]:
    """Remove the MNIST pipeline's run folders in ``runs_dir`` that ``retention`` lets go (never
    ``current``), then the cached arrays no remaining run uses; the run ids removed."""
    root = Path(runs_dir)
    if not retention.active or not root.is_dir():
        return []
    when = {path.name: path.stat().st_mtime for path in root.iterdir()
            if path.is_dir() and RUN_NAME.match(path.name)}
    gone = _expired_but_current(retention, when, current, now)
    for run in gone:
        shutil.rmtree(root / run, ignore_errors=True)
    used = set()
    for ingest in root.glob("*/stages/ingest.json"):
        try:
            used.add(Path(read_json(ingest)["train_images"]).name)
        except (OSError, ValueError, KeyError):
            continue
    now = time.time() if now is None else now
    for cached in (root / CACHE_DIR).glob("*.npy") if gone else ():
        if cached.name not in used and now - cached.stat().st_mtime > CACHE_GRACE:
            cached.unlink(missing_ok=True)
    return gone
