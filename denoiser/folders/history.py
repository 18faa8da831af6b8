"""A folder's cleaning history: one row per run in ``OUT_DIR/.denoiser/history.parquet``, and
the drift rule that compares a run with the runs before it.

A run is judged against the previous :data:`WINDOW` runs that cleaned at least
:data:`MIN_FILES` files (a scheduled run that found three new files says little about the
folder). It drifts where, against at least :data:`MIN_RUNS` such runs:

* the median input noise (``noise_sigma_in``) is more than :data:`NOISE_RATIO` times the
  highest of theirs, or less than their lowest divided by it;
* the share of files flagged as unlike the training digits, or the share that failed,
  exceeds the highest of theirs by more than :data:`SHARE_MARGIN` (absolute), counts at
  least :data:`MIN_COUNT` files, and is that high by chance less than once in
  ``1 / ALPHA`` runs of the same size drawn at the earlier runs' pooled rate (a one-sided
  binomial test). A small batch is noisy: 3 flagged files in 40 (7.5%) where earlier runs
  had 2% is not drift, and without the test it raised one on an unchanged folder.

* the input noise file by file is unlike that of *each* of those runs: the
  Kolmogorov-Smirnov distance between the two runs' distributions of per-file noise
  (kept as :data:`QUANTILES` in ``noise_in_quantiles``) is above the two-sample test's
  critical value at :data:`ALPHA` and at least :data:`SHIFT` (a quarter of the files moved),
  and some quantile moved by :data:`NOISE_RATIO` (a change that matters, not only one that
  is sure).
  This catches what the median misses, such as a third of a batch from a failing scanner,
  while a run like any one of the earlier ones (a folder fed by two scanners on alternate
  days) is not drift, and a small batch needs a larger distance.

A folder whose noise doubles is flagged on its first such run; runs that repeat the same
kind of scans stay inside the band.
"""

from __future__ import annotations

import io
import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from denoiser.folders.workdir import RUNS, WORK_DIR, shard_reports
from denoiser.out_tree import OutTree

log = logging.getLogger(__name__)

HISTORY_FILE = "history.parquet"
WINDOW = 10
MIN_RUNS = 3
MIN_FILES = 20
NOISE_RATIO = 1.5
SHARE_MARGIN = 0.05
MIN_COUNT = 5
ALPHA = 1e-4
SHIFT = 0.25
QUANTILES = np.round(np.linspace(0.05, 0.95, 19), 2)

HISTORY_COLUMNS = {
    "run_id": "string", "time": "datetime64[us, UTC]", "model_id": "string",
    "files": "int64", "ok": "int64", "error": "int64", "skipped": "int64", "ood": "int64",
    "error_rate": "float64",  # of the files processed (not skipped)
    "ood_share": "float64",  # of the files cleaned
    "recon_mse_mean": "float64", "recon_mse_p95": "float64",
    "noise_in_median": "float64", "noise_out_median": "float64",  # noise_sigma_in / _out
    "psnr_est_median": "float64", "seconds": "float64", "images_per_s": "float64",
    "noise_in_quantiles": "string",  # JSON: the per-file input noise at QUANTILES, and how many files
    "drift": "string",  # why the run drifted from the runs before it; null when it did not
}


HISTORY = f"{WORK_DIR}/{HISTORY_FILE}"


def run_row(frame: pd.DataFrame, *, run_id: str, model_id: str, seconds: float,
            when: datetime | None = None) -> dict[str, Any]:
    """The history row of one run, from its report."""
    ok = frame[frame["status"] == "ok"]
    n = {status: int((frame["status"] == status).sum()) for status in ("ok", "error", "skipped")}
    processed = n["ok"] + n["error"]
    ood = int(ok["ood"].fillna(False).astype(bool).sum())

    def stat(column: str, how: str) -> float:
        values = ok[column].dropna().astype(float)
        if values.empty:
            return float("nan")
        return float(values.mean() if how == "mean" else values.quantile(0.95 if how == "p95" else 0.5))

    row = {"run_id": run_id, "time": when or datetime.now(timezone.utc), "model_id": model_id,
           "files": int(len(frame)), **n, "ood": ood,
           "error_rate": n["error"] / processed if processed else 0.0,
           "ood_share": ood / n["ok"] if n["ok"] else 0.0,
           "recon_mse_mean": stat("recon_mse", "mean"), "recon_mse_p95": stat("recon_mse", "p95"),
           "noise_in_median": stat("noise_sigma_in", "median"),
           "noise_out_median": stat("noise_sigma_out", "median"),
           "psnr_est_median": stat("psnr_est", "median"),
           "noise_in_quantiles": noise_quantiles(ok["noise_sigma_in"]), "drift": None}
    return timed(row, seconds)


def noise_quantiles(values: pd.Series) -> str | None:
    """The per-file values at :data:`QUANTILES` and their count, as JSON (None for fewer
    than :data:`MIN_FILES`)."""
    finite = values.dropna().astype(float).to_numpy()
    finite = finite[np.isfinite(finite)]
    if len(finite) < MIN_FILES:
        return None
    return json.dumps({"n": int(len(finite)), "q": [round(float(v), 6) for v in np.quantile(finite, QUANTILES)]})


def ks_distance(a: list[float], b: list[float]) -> float:
    """The largest gap between two distributions given by their values at :data:`QUANTILES`
    (the Kolmogorov-Smirnov distance, to within the 5% beyond the outer quantiles)."""
    grid = np.union1d(a, b)

    def cdf(q: list[float]) -> np.ndarray:
        q = np.maximum.accumulate(np.asarray(q, dtype=np.float64))
        return np.interp(grid, q, QUANTILES, left=0.0, right=1.0)

    return float(np.abs(cdf(a) - cdf(b)).max())


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """The two-sample Kolmogorov-Smirnov distance that samples of ``n`` and ``m`` from one
    distribution exceed with probability about ``alpha`` (the asymptotic formula)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def timed(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``row`` with the run's duration and its speed."""
    processed = row["ok"] + row["error"]
    return {**row, "seconds": float(seconds),
            "images_per_s": processed / seconds if seconds > 0 else float("nan")}


def empty_history() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_COLUMNS.items()})


def read_history(tree: OutTree) -> pd.DataFrame:
    """The folder's history, oldest run first (empty when it has none). A history that
    cannot be read is set aside (``history.parquet.damaged-<time>``, a warning naming it)
    and rebuilt from the runs' shard reports."""
    try:
        content = tree.read_bytes(HISTORY)
    except FileNotFoundError:
        return empty_history()
    try:
        frame = pd.read_parquet(io.BytesIO(content))
        missing = {"run_id", "time", "ok", "error", "ood"} - set(frame.columns)
        if missing:
            raise ValueError(f"no column {', '.join(sorted(missing))}")
        for column, dtype in HISTORY_COLUMNS.items():  # a history written before a column existed
            if column not in frame.columns:
                frame[column] = pd.Series([None] * len(frame), dtype=dtype)
        return frame
    except Exception as error:  # noqa: BLE001 - any damage: set aside, rebuild
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = f"{HISTORY}.damaged-{stamp}"
        tree.rename(HISTORY, aside)
        rebuilt = rebuild_history(tree)
        log.warning("the folder's history %s could not be read (%s): set aside as %s and rebuilt from "
                    "the shard reports of %d runs", tree.shown(HISTORY), str(error).splitlines()[0][:200],
                    tree.shown(aside), len(rebuilt))
        write_history(tree, rebuilt)
        return rebuilt


def write_history(tree: OutTree, history: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    history.to_parquet(buffer, engine="pyarrow", index=False)
    tree.write_bytes(HISTORY, buffer.getvalue())


def rebuild_history(tree: OutTree) -> pd.DataFrame:
    """One row per run from the shard reports under ``.denoiser/runs`` (each run's time is
    its newest shard's; its seconds from ``timings.json`` where it is readable); the drift
    of each run judged against the runs before it, as it was when they ran."""
    by_run: dict[str, list[str]] = {}
    for rel in shard_reports(tree):
        by_run.setdefault(rel.split("/")[-2], []).append(rel)
    rows = []
    for run_id, rels in by_run.items():
        try:
            frame = pd.concat([pd.read_parquet(io.BytesIO(tree.read_bytes(rel))) for rel in rels])
            when = max(tree.lstat(rel).st_mtime for rel in rels)
        except Exception:  # noqa: BLE001 - an unreadable run is left out
            continue
        try:
            seconds = float(json.loads(tree.read_bytes(f"{RUNS}/{run_id}/timings.json"))["flow_seconds"])
        except Exception:  # noqa: BLE001 - unknown duration
            seconds = float("nan")
        models = frame["model_id"].dropna()
        row = run_row(frame, run_id=run_id, model_id=str(models.iloc[0]) if len(models) else "",
                      seconds=seconds, when=datetime.fromtimestamp(when, timezone.utc))
        rows.append(row)
    history = empty_history()
    for row in sorted(rows, key=lambda r: r["time"]):
        reasons = drift_reasons(history, row)
        history = _appended(history, {**row, "drift": "; ".join(reasons) or None})
    return history


def _appended(history: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    added = pd.DataFrame([row], columns=list(HISTORY_COLUMNS)).astype(HISTORY_COLUMNS)
    return pd.concat([history.astype(HISTORY_COLUMNS), added], ignore_index=True) if len(history) else added


def judged_runs(history: pd.DataFrame) -> list[str]:
    """The ids of the runs a new run is compared with: the last :data:`WINDOW` that cleaned
    at least :data:`MIN_FILES` files (retention keeps their rows)."""
    return history[(history["ok"] + history["error"]) >= MIN_FILES].tail(WINDOW)["run_id"].astype(str).tolist()


def drift_reasons(history: pd.DataFrame, row: dict[str, Any]) -> list[str]:
    """Why ``row`` drifts from the runs in ``history`` (see the module's rule); [] if not."""
    if row["ok"] + row["error"] < MIN_FILES:
        return []
    earlier = history[history["run_id"].isin(judged_runs(history))]
    if len(earlier) < MIN_RUNS:
        return []
    reasons = []
    noise, before = row["noise_in_median"], earlier["noise_in_median"].dropna()
    if np.isfinite(noise) and len(before) >= MIN_RUNS:
        low, high = float(before.min()), float(before.max())
        if noise > high * NOISE_RATIO or noise < low / NOISE_RATIO:
            reasons.append(f"median input noise {noise:.3f}, the previous {len(before)} runs "
                           f"{low:.3f}-{high:.3f}")
        else:
            reasons += _per_file_noise(earlier, row)
    for column, count, out_of, what in (("ood_share", "ood", "ok", "share flagged as unlike the training digits"),
                                        ("error_rate", "error", None, "share of files that failed")):
        high = float(earlier[column].max())
        k, n = int(row[count]), int(row[out_of] if out_of else row["ok"] + row["error"])
        before_k = float(earlier[count].sum())
        before_n = float(earlier[out_of].sum() if out_of else (earlier["ok"] + earlier["error"]).sum())
        rate = (before_k + 0.5) / (before_n + 1)  # never 0: a first flagged file is not a certainty
        if row[column] > high + SHARE_MARGIN and k >= MIN_COUNT and binomial_tail(k, n, rate) < ALPHA:
            reasons.append(f"{what} {row[column]:.1%} ({k} of {n}), at most {high:.1%} in the previous "
                           f"{len(earlier)} runs ({rate:.1%} of their files)")
    return reasons


def _per_file_noise(earlier: pd.DataFrame, row: dict[str, Any]) -> list[str]:
    """The per-file rule of the module's docstring: [] unless the run's noise, file by file,
    is unlike each earlier run's that kept its quantiles (at least :data:`MIN_RUNS`)."""
    mine = _quantiles(row.get("noise_in_quantiles"))
    theirs = [q for q in map(_quantiles, earlier.get("noise_in_quantiles", pd.Series(dtype=str))) if q]
    if mine is None or len(theirs) < MIN_RUNS:
        return []
    gaps = [ks_distance(mine["q"], q["q"]) for q in theirs]
    if all(gap > max(SHIFT, ks_critical(mine["n"], q["n"])) and _moved(mine["q"], q["q"]) >= NOISE_RATIO
           for gap, q in zip(gaps, theirs, strict=True)):
        return [f"input noise file by file unlike each of the previous {len(theirs)} runs: at least "
                f"{min(gaps):.0%} of the files apart (Kolmogorov-Smirnov); its quartiles "
                f"{mine['q'][4]:.3f}/{mine['q'][9]:.3f}/{mine['q'][14]:.3f}"]
    return []


def _moved(a: list[float], b: list[float]) -> float:
    """The largest factor between the two runs' values at one quantile."""
    x, y = np.maximum(a, 1e-6), np.maximum(b, 1e-6)
    return float(np.maximum(x / y, y / x).max())


def _quantiles(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        found = json.loads(text)
        return found if len(found["q"]) == len(QUANTILES) and int(found["n"]) > 0 else None
    except (ValueError, KeyError, TypeError):
        return None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X binomial with ``n`` trials of probability ``p`` (0 < p < 1)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    j = np.arange(k, n + 1, dtype=np.float64)
    log_terms = (math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in j])
                 + j * math.log(p) + (n - j) * math.log1p(-p))
    top = log_terms.max()
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum()))


def append_run(tree: OutTree, row: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """Judge ``row`` against the folder's history, append it (written atomically) and return
    the history with it and the drift reasons. Runs into one OUT_DIR hold its lock, so one
    run at a time writes here."""
    history = read_history(tree)
    history = history[history["run_id"] != row["run_id"]]  # a rebuilt history may hold this run already
    reasons = drift_reasons(history, row)
    joined = _appended(history, {**row, "drift": "; ".join(reasons) or None})
    write_history(tree, joined)
    return joined, reasons
