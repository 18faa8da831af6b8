"""What a cleaned folder's history says about it lately, read without writing anything: the
fleet view (``denoiser status``) shows one line of it per deployed folder.

    activity = folder_activity("cleaned/", now)   # last run with files, 7 days' totals, drift
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from denoiser.folders.history import HISTORY

DAYS = 7  # the totals' window


def folder_activity(out_dir: str | os.PathLike[str], now: datetime, days: int = DAYS) -> dict[str, Any]:
    """From ``OUT_DIR``'s history (read only: a damaged one is reported, not set aside):
    ``runs`` (all recorded), the last run that cleaned or failed a file (``last``: its time,
    ok, error, flagged, model, drift), the totals of the last ``days`` days (``week``: runs,
    ok, error, flagged) and the last drift (``drift``: time and why, or None). ``problem`` is
    a one-line reason where there is no history to read, else None."""
    path = Path(out_dir) / HISTORY
    empty = {"runs": 0, "last": None, "week": {"runs": 0, "ok": 0, "error": 0, "flagged": 0}, "drift": None}
    if not path.is_file():
        return {**empty, "problem": "no run has cleaned it yet" if Path(out_dir).is_dir() else "no output folder yet"}
    try:
        history = pd.read_parquet(path, columns=["run_id", "time", "model_id", "ok", "error", "ood", "drift"])
    except Exception as error:  # noqa: BLE001 - any damage: say so; the next run rebuilds it
        return {**empty, "problem": f"history unreadable ({str(error).splitlines()[0][:120]})"}
    history = history.sort_values("time")
    busy = history[(history["ok"] + history["error"]) > 0]
    last = None
    if len(busy):
        row = busy.iloc[-1]
        last = {"time": row["time"].to_pydatetime(), "ok": int(row["ok"]), "error": int(row["error"]),
                "flagged": int(row["ood"]), "model_id": row["model_id"],
                "drift": None if pd.isna(row["drift"]) else str(row["drift"])}
    recent = history[history["time"] >= pd.Timestamp(now - timedelta(days=days))]
    drifted = history[history["drift"].notna()]
    drift = None if drifted.empty else {"time": drifted.iloc[-1]["time"].to_pydatetime(),
                                         "why": str(drifted.iloc[-1]["drift"])}
    return {"runs": len(history), "last": last, "drift": drift, "problem": None,
            "week": {"runs": len(recent), "ok": int(recent["ok"].sum()), "error": int(recent["error"].sum()),
                     "flagged": int(recent["ood"].sum())}}
