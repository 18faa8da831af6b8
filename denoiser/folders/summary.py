"""What a cleaning run tells its user, from its report: the line its final state carries, the
files that failed and why, the tables its artifacts show (numbers rounded for reading), and
which files the before/after strip shows.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from denoiser.files import printable
from denoiser.folders.report import KNOWN_BAD

FAILURES_SHOWN = 20  # failed files named in the logs; the artifact lists up to 50
WORST_SHOWN = 10


def failures(frame: pd.DataFrame, limit: int = FAILURES_SHOWN) -> list[dict[str, str]]:
    """The first ``limit`` failed files (in path order) and their reasons."""
    failed = frame[frame["status"] == "error"].head(limit)
    return [{"path": printable(row.path), "error": printable(row.error)} for row in failed.itertuples()]


def state_message(totals: dict[str, int], flagged: int, frame: pd.DataFrame) -> str:
    """One line for the run's final state: the counts, and the first failure where there is one."""
    files = sum(totals.values())
    known = int(((frame["status"] == "skipped") & frame["error"].fillna("").str.startswith(KNOWN_BAD)).sum())
    parts = [f"{files:,} files: {totals['ok']:,} ok", _plural(totals["error"], "error"),
             f"{totals['skipped']:,} skipped" + (f" ({known:,} known bad)" if known else ""),
             f"{flagged:,} flagged as unlike the training digits"]
    message = ", ".join(parts)
    first = failures(frame, 1)
    if first:
        message += f"; first error: {first[0]['path']}: {first[0]['error']}"
    return message


def count_table(totals: dict[str, int], flagged: int) -> list[dict[str, Any]]:
    """The counts, one row per status."""
    rows = [{"files": status, "count": n} for status, n in totals.items()]
    return rows + [{"files": "flagged (ok, but unlike the training digits)", "count": flagged}]


def worst_table(frame: pd.DataFrame, limit: int = WORST_SHOWN) -> list[dict[str, Any]]:
    """The cleaned files the model changed most (highest recon_mse), figures rounded."""
    ok = frame[frame["status"] == "ok"].nlargest(limit, "recon_mse")
    return [{"path": row.path, "recon_mse": _significant(row.recon_mse, 3),
             "psnr_est_db": _round(row.psnr_est, 1), "noise_level": _round(row.noise_level, 3),
             "flag": row.ood_reason if row.ood is True else None}
            for row in ok.itertuples()]


def strip_picks(frame: pd.DataFrame, count: int = 8) -> list[tuple[int, str]]:
    """(row index, why) of the cleaned files worth looking at, most telling first: the
    flagged ones, the ones changed most, an inverted one, the largest; then the rest by
    how much they changed. Files whose names are not UTF-8 cannot be shown."""
    ok = frame[(frame["status"] == "ok") & frame["path_bytes"].isna()]
    picks: dict[int, str] = {}

    def take(rows: pd.DataFrame, why: str, most: int) -> None:
        for index in rows.index:
            if len(picks) >= count or most <= 0:
                return
            if index not in picks:
                picks[index] = why
                most -= 1

    by_change = ok.sort_values("recon_mse", ascending=False, kind="stable")
    take(ok[ok["ood"].fillna(False).astype(bool)], "flagged", 2)
    take(by_change, "changed most", 3)
    take(ok[ok["inverted"].fillna(False).astype(bool)], "inverted", 1)
    take(ok.assign(area=ok["width"] * ok["height"]).sort_values("area", ascending=False, kind="stable"),
         "largest", 1)
    take(by_change, "changed most", count)
    return list(picks.items())


def _round(value: Any, decimals: int) -> float | None:
    """``value`` to ``decimals`` places; None for a missing or infinite one."""
    if value is None or pd.isna(value) or not math.isfinite(float(value)):
        return None
    return round(float(value), decimals)


def _significant(value: Any, digits: int) -> float | None:
    """``value`` to ``digits`` significant digits (recon_mse spans decades)."""
    if value is None or pd.isna(value) or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.{digits}g}")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
