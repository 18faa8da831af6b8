"""Runs and how long their folders are kept: a run id, the names of the folders the
product makes for runs, and :class:`Retention`, which keeps the newest ``keep_runs`` runs
and (or) the runs younger than ``keep_days``; a run either rule lets go is removed. Nothing
is ever removed from the current run, and nothing the product did not write.

The MNIST pipeline's run folders are pruned here (:func:`prune_pipeline_runs`:
``data/runs/<run>/``, and the cached training arrays no kept run uses); a cleaned folder's
runs by :func:`denoiser.folders.retention.prune_clean_runs`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from denoiser.out_tree import LinkRefused, OutTree

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


def new_run_id() -> str:
    """A sortable, unique run id: ``20261124-170302-a1b2c3``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def expired_but_current(retention: Retention, when: dict[str, float], current: str | None,
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
        gone = expired_but_current(retention, when, current, now)
        for run in gone:
            try:
                tree.remove_tree(run)
            except (LinkRefused, OSError) as error:
                log.warning("retention left run %s in place: %s", run, str(error).splitlines()[0])
        used = set()
        for run in tree.listdir():
            try:
                used.add(os.path.basename(json.loads(tree.read_bytes(f"{run}/stages/ingest.json"))["train_images"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        now = time.time() if now is None else now
        for name in tree.listdir(CACHE_DIR) if gone else ():
            info = tree.lstat(f"{CACHE_DIR}/{name}")
            if (name.endswith(".npy") and name not in used and info is not None and stat.S_ISREG(info.st_mode)
                    and now - info.st_mtime > CACHE_GRACE):
                tree.unlink(f"{CACHE_DIR}/{name}")
    return gone
