"""What each stage leaves in its run folder: ``stages/<stage>.json``, its result with the
stage's name and seconds, so that a resumed run can read what an earlier one did; and
``stages/done/<stage>-<digest>.json``, a stage's result kept under a digest of its
parameters, which a retried or resumed flow run reuses instead of running the stage again."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from denoiser.files import read_json, write_json

StageResult = dict[str, Any]
CODE_VERSION = "2"  # part of every done_path: bump when a stage's outputs change meaning
log = logging.getLogger(__name__)


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


def done_path(run_dir: str | Path, stage: str, parameters: dict[str, Any]) -> Path:
    """Where ``stage``'s result for these ``parameters`` is kept: inside the run folder, so a
    deleted run folder is never taken for done."""
    blob = json.dumps(parameters, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob + CODE_VERSION.encode()).hexdigest()[:16]
    return Path(run_dir) / "stages" / "done" / f"{stage}-{digest}.json"


def read_done(path: Path) -> StageResult | None:
    """A kept stage result, read as plain JSON (no object hooks, nothing imported or
    unpickled); None, with a warning, if it is anything but a JSON object."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        stored = None
    if not isinstance(stored, dict):
        log.warning("stored result %s is not a JSON object: rejected, the stage runs again", path)
        return None
    return stored
