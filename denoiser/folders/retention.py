"""Retention of a cleaned folder's runs (:class:`denoiser.runs.Retention` says which to keep).

* A folder's cleaning runs (:func:`prune_clean_runs`): ``OUT_DIR/.denoiser/reports/<run>.parquet``,
  ``OUT_DIR/.denoiser/runs/<run>/`` (shard reports, timings) and the run's row in
  ``history.parquet``, for the runs the history or the ledger records (the product made
  them), removed by descriptor (the history rows of the runs the drift rule compares with,
  :func:`denoiser.folders.history.judged_runs`, stay): a link in the way is left alone, never followed. The
  manifest, which says what was cleaned, is kept whole; only a ``--rebuild-manifest``
  (which reads the shard reports) then knows less.
* The MNIST pipeline's run folders: :func:`denoiser.runs.prune_pipeline_runs`.
"""

from __future__ import annotations

import logging
import stat

import pandas as pd

from denoiser.folders import history
from denoiser.folders.workdir import REPORTS, RUNS, forget_runs, recorded_runs
from denoiser.out_tree import LinkRefused, OutTree
from denoiser.runs import RUN_NAME, Retention, expired_but_current

log = logging.getLogger(__name__)

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
    gone = expired_but_current(retention, when, current, now)
    for run in gone:
        _remove_run(tree, run)
    # The drift rule's band (the last runs that cleaned enough files) keeps its history rows,
    # whatever the retention: pruned to them, idle scheduled runs would leave nothing to compare with.
    judged = history.judged_runs(past)
    kept = past[~past["run_id"].isin(gone) | past["run_id"].isin(judged)]
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
    except (LinkRefused, OSError) as error:
        log.warning("retention left run %s in place: %s", run, str(error).splitlines()[0])


