"""The output folder's working state, under ``OUT_DIR/.denoiser/``: the manifest, temporary
files, per-run shard reports and the lock that keeps two runs from cleaning into one folder.

    with folder_lock(out_dir):                # FolderBusy if another run holds it
        remove_stale_temporaries(out_dir)     # what a killed run left in .denoiser/tmp
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

WORK_DIR = ".denoiser"  # under OUT_DIR: manifest, temporary files, shard reports


def work_dir(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / WORK_DIR


def remove_stale_temporaries(out_dir: str | os.PathLike[str]) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    tmp = work_dir(out_dir) / "tmp"
    if not tmp.is_dir():
        return 0
    stale = list(tmp.iterdir())
    shutil.rmtree(tmp, ignore_errors=True)
    return len(stale)


class FolderBusy(RuntimeError):
    """Another run holds the output folder's lock."""


class folder_lock:  # noqa: N801 - used as a context manager, like a function
    """An exclusive, non-blocking lock on ``out_dir`` (``.denoiser/lock``) for one run.

    The operating system drops it when the process ends, however it ends.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        path = work_dir(out_dir) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a+")  # noqa: SIM115 - held for the lock's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FolderBusy(f"another run is cleaning into {out_dir}") from None

    def __enter__(self) -> folder_lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
