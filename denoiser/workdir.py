"""The output folder's working state, under ``OUT_DIR/.denoiser/``: the manifest, temporary
files, per-run shard reports, the lock that keeps two runs from cleaning into one folder,
and what ``clean --adapt`` decided for it (``adapted.json``).

    with folder_lock(out_dir):                # FolderBusy if another run holds it
        remove_stale_temporaries(out_dir)     # what a killed run left in .denoiser/tmp
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import secrets
import shutil
from pathlib import Path

from denoiser.files import write_json
from denoiser.images import ImageError
from denoiser.safe_fs import make_folders_inside

WORK_DIR = ".denoiser"  # under OUT_DIR: manifest, temporary files, shard reports
TEMPORARY = ".*.part"  # the names of every temporary file the product makes (files.atomic_path)


def work_dir(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / WORK_DIR


def ensure_work_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``OUT_DIR/.denoiser``, made if absent; a link or a file in its place is refused."""
    if not Path(out_dir).is_dir():
        raise FileNotFoundError(f"output folder {out_dir} does not exist or is not a folder")
    return make_folders_inside(out_dir, WORK_DIR)


class OutputFolderError(ValueError):
    """OUT_DIR cannot be made or written (read-only, a dangling link, a file, a link planted
    where the working folder goes)."""


def prepare_output(out_dir: str | os.PathLike[str]) -> Path:
    """Make OUT_DIR and its working folder, and check that a file can be written there,
    before any work starts; a problem is one :class:`OutputFolderError` line."""
    path = Path(out_dir)
    if path.is_symlink() and not path.exists():
        raise OutputFolderError(f"output folder {out_dir} is a dangling link")
    try:
        path.mkdir(parents=True, exist_ok=True)
        work = ensure_work_dir(path)
        probe = work / f".probe-{secrets.token_hex(6)}.part"
        probe.write_bytes(b"")
        probe.unlink()
    except ImageError as error:
        raise OutputFolderError(str(error)) from None
    except FileExistsError:
        raise OutputFolderError(f"output folder {out_dir} exists and is not a folder") from None
    except PermissionError:
        raise OutputFolderError(f"output folder {out_dir} is not writable (permission denied)") from None
    except OSError as error:
        raise OutputFolderError(f"output folder {out_dir}: {error.strerror or error}") from None
    return work


def remove_stale_temporaries(out_dir: str | os.PathLike[str],
                             report: str | os.PathLike[str] | None = None) -> int:
    """Delete the temporary files a killed run left behind: everything in
    ``.denoiser/tmp``, ``.*.part`` files anywhere under ``.denoiser``, and the temporaries
    of ``report`` beside it (only that report's, where the folder may be shared). Returns
    how many."""
    work = work_dir(out_dir)
    if not work.is_dir() or work.is_symlink():
        return 0
    tmp = work / "tmp"
    removed = len(list(tmp.iterdir())) if tmp.is_dir() and not tmp.is_symlink() else 0
    shutil.rmtree(tmp, ignore_errors=True)
    found = list(work.glob("**/" + TEMPORARY))
    if report is not None and Path(report).parent.is_dir():
        found += Path(report).parent.glob(f".{glob.escape(Path(report).name)}.*.part")
    for path in found:
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class FolderBusy(RuntimeError):
    """Another run holds the output folder's lock."""


class LockError(OSError):
    """The lock file cannot be made or opened (a folder or a link in its place)."""


def open_lock_file(out_dir: str | os.PathLike[str]) -> int:
    """An fd of ``.denoiser/lock`` (made if absent, never through a link); a folder or a
    link in its place is one :class:`LockError` line."""
    path = prepare_output(out_dir) / "lock"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        kind = {errno.EISDIR: "it is a folder", errno.ELOOP: "it is a link"}.get(error.errno)
        raise LockError(f"cannot lock {path}: {kind or error.strerror}") from None


class folder_lock:  # noqa: N801 - used as a context manager, like a function
    """An exclusive, non-blocking lock on ``out_dir`` (``.denoiser/lock``) for one run.

    The operating system drops it when the process ends, however it ends.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self._file = os.fdopen(open_lock_file(out_dir), "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FolderBusy(f"another run is cleaning into {out_dir}") from None

    def __enter__(self) -> folder_lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def shard_reports(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every run's shard reports under ``.denoiser/runs``, oldest first."""
    found = work_dir(out_dir).glob("runs/*/shard-*.parquet")
    return sorted(found, key=lambda path: (path.stat().st_mtime, str(path)))


def read_adaptation(out_dir: str | os.PathLike[str]) -> dict | None:
    """What ``clean --adapt`` decided for this folder last time (parent, adapted model, the
    model chosen, the noise it was adapted on), or None."""
    path = work_dir(out_dir) / "adapted.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and {"parent", "chosen", "levels"} <= state.keys() else None


def write_adaptation(out_dir: str | os.PathLike[str], state: dict) -> None:
    write_json(ensure_work_dir(out_dir) / "adapted.json", state)
