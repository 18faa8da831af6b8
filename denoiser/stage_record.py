"""What each stage leaves in its run folder: ``stages/<stage>.json``, its result with the
stage's name and seconds, so that a resumed run can read what an earlier one did."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from denoiser.files import read_json, write_json

StageResult = dict[str, Any]


def record(run_dir: Path, stage: str, result: StageResult, started: float) -> StageResult:
    """``result`` with the stage's name and seconds since ``started``, written to the run folder."""
    result = {**result, "stage": stage, "seconds": round(time.perf_counter() - started, 3)}
    write_json(run_dir / "stages" / f"{stage}.json", result)
    return result


def read_stage(run_dir: Path, stage: str) -> StageResult:
    """What ``stage`` recorded in ``run_dir``, or {} when it has not run there."""
    path = run_dir / "stages" / f"{stage}.json"
    if not path.is_file():
        return {}
    try:
        found = read_json(path)
    except ValueError as error:
        raise ValueError(f"{error}: not a stage record; remove it to run the stage again") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path} is not a stage record (a JSON {type(found).__name__}, not an object); "
                         "remove it to run the stage again")
    return found
