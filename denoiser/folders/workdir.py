"""The output folder's working state, under ``OUT_DIR/.denoiser/``: the manifest, temporary
files, per-run shard reports, the folder's history, the ledger of the runs the product
made, the lock that keeps two runs from cleaning into one folder, and what ``clean
--adapt`` decided for it (``adapted.json``, :mod:`denoiser.adapt.decide`).

Everything here goes through an :class:`denoiser.out_tree.OutTree`: nothing is reached
through a link, and an entry of the wrong kind (a link, a file where a folder goes) is one
:class:`OutputFolderError` line before any work starts.

    with OutTree(out_dir) as tree, folder_lock(tree):   # FolderBusy if another run holds it
        remove_stale_temporaries(tree)                   # what a killed run left in .denoiser/tmp
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import glob
import os
import secrets
import stat
import time
from pathlib import Path

from denoiser.folders.read import ImageError
from denoiser.out_tree import LinkRefused, OutTree

WORK_DIR = ".denoiser"  # under OUT_DIR: manifest, temporary files, shard reports
TMP = f"{WORK_DIR}/tmp"
RUNS = f"{WORK_DIR}/runs"  # RUNS/<run id>/shard-NNNNN.parquet, timings.json
REPORTS = f"{WORK_DIR}/reports"  # REPORTS/<run id>.parquet
MANIFEST = f"{WORK_DIR}/manifest.sqlite"
LEDGER = f"{WORK_DIR}/ledger.txt"  # "<run id> <unix time>" per run the product started here
#: Space held back so that, when the disk fills during a run, the manifest can still record
#: what was written (it is freed then, and made again by the next run).
RESERVE = f"{WORK_DIR}/reserve"
RESERVE_BYTES = 1 << 20
TEMPORARY = ".*.part"  # the names of every temporary file the product makes
#: What the product keeps in ``.denoiser``: each absent or of this kind, never a link.
EXPECTED = {"tmp": "folder", "runs": "folder", "reports": "folder", "manifest.sqlite": "file",
            "manifest.sqlite-wal": "file", "manifest.sqlite-shm": "file", "history.parquet": "file",
            "lock": "file", "adapted.json": "file", "ledger.txt": "file", "reserve": "file"}


def work_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``OUT_DIR/.denoiser`` as a path, for messages and for reading what a user may open."""
    return Path(out_dir) / WORK_DIR


class OutputFolderError(ValueError):
    """OUT_DIR cannot be made or written (read-only, a dangling link, a file, a link planted
    where the working folder or one of its entries goes)."""


def check_work_dir(tree: OutTree) -> None:
    """Refuse, in one line, a ``.denoiser`` whose entries are links or of the wrong kind."""
    for name, kind in EXPECTED.items():
        found = tree.lstat((WORK_DIR, name))
        if found is None:
            continue
        is_dir = stat.S_ISDIR(found.st_mode)
        if stat.S_ISLNK(found.st_mode) or is_dir != (kind == "folder") or \
                (kind == "file" and not stat.S_ISREG(found.st_mode)):
            what = "a link" if stat.S_ISLNK(found.st_mode) else "a folder" if is_dir else \
                "a file" if kind == "folder" else "not a regular file"
            raise OutputFolderError(f"{tree.shown((WORK_DIR, name))} is {what}, where the product keeps "
                                    f"a {kind}; move it away and run again")


def open_tree(out_dir: str | os.PathLike[str]) -> OutTree:
    """OUT_DIR (made if absent) as an :class:`OutTree`, its working folder made and checked
    and a file written and removed there, before any work starts; a problem is one
    :class:`OutputFolderError` line."""
    path = Path(out_dir)
    if path.is_symlink() and not path.exists():
        raise OutputFolderError(f"output folder {out_dir} is a dangling link")
    tree = None
    try:
        tree = OutTree(path)
        tree.make_folder(WORK_DIR)
        check_work_dir(tree)
        probe = f"{WORK_DIR}/.probe-{secrets.token_hex(6)}.part"
        tree.write_bytes(probe, b"", durable=False)
        tree.unlink(probe)
        return tree
    except BaseException as error:
        if tree is not None:
            tree.close()
        raise _output_error(out_dir, error) from None


def _output_error(out_dir: str | os.PathLike[str], error: BaseException) -> BaseException:
    """What went wrong with OUT_DIR, as one OutputFolderError line (others pass through)."""
    if isinstance(error, OutputFolderError) or not isinstance(error, (ImageError, LinkRefused, OSError)):
        return error
    if isinstance(error, (ImageError, LinkRefused)):
        return OutputFolderError(str(error))
    if isinstance(error, FileExistsError):
        return OutputFolderError(f"output folder {out_dir} exists and is not a folder")
    if isinstance(error, NotADirectoryError):
        return OutputFolderError(f"output folder {out_dir} is not a folder")
    if isinstance(error, PermissionError):
        return OutputFolderError(f"output folder {out_dir} is not writable (permission denied)")
    if is_disk_full(error):
        return OutputFolderError(no_space_message(out_dir))
    return OutputFolderError(f"output folder {out_dir}: {error.strerror or error}")


def prepare_output(out_dir: str | os.PathLike[str]) -> Path:
    """:func:`open_tree` for a caller that needs only the check; the working folder's path."""
    open_tree(out_dir).close()
    return work_dir(out_dir)


def no_space_message(out_dir: str | os.PathLike[str]) -> str:
    try:
        free = os.statvfs(out_dir)
        left = f"{free.f_bavail * free.f_frsize:,} bytes free"
    except OSError:
        left = "free space unknown"
    return f"no space left on {out_dir} ({left})"


class DiskFull(OSError):
    """OUT_DIR's file system is full: the run stops; a rerun after space is freed goes on
    from what was recorded."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENOSPC, no_space_message(out_dir))

    def __str__(self) -> str:
        return self.strerror or "no space left"


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full (an OSError, or SQLite's own words)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(error)


def ensure_reserve(tree: OutTree) -> None:
    """Make :data:`RESERVE` if it is absent or short; :class:`DiskFull` if there is no room."""
    info = tree.lstat(RESERVE)
    if info is not None and info.st_size >= RESERVE_BYTES:
        return
    try:
        with tree.folder(WORK_DIR, create=True) as work:
            fd = os.open("reserve", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=work)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
    except OSError as error:
        if is_disk_full(error):
            tree.unlink(RESERVE)
            raise DiskFull(tree.path) from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: no reserve
            raise


def release_reserve(tree: OutTree) -> None:
    """Give :data:`RESERVE`'s space back (the disk is full)."""
    tree.unlink(RESERVE)


def remove_stale_temporaries(tree: OutTree, report: str | os.PathLike[str] | None = None) -> int:
    """Delete the temporary files a killed run left behind: everything in
    ``.denoiser/tmp``, ``.*.part`` files anywhere under ``.denoiser`` (by descriptor,
    following no link), and the temporaries of ``report`` beside it (only that report's,
    where the folder may be shared). Returns how many."""
    removed = len(tree.listdir(TMP))
    if removed:
        tree.remove_tree(TMP)
    for _parts, files, dir_fd in tree.walk(WORK_DIR):
        for name in files:
            if fnmatch.fnmatch(name, TEMPORARY):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
    if report is not None and Path(report).parent.is_dir():
        for path in Path(report).parent.glob(f".{glob.escape(Path(report).name)}.*.part"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


class FolderBusy(RuntimeError):
    """Another run holds the output folder's lock."""


class LockError(OSError):
    """The lock file cannot be made or opened (a folder or a link in its place)."""


def open_lock_file(tree: OutTree) -> int:
    """An fd of ``.denoiser/lock`` (made if absent, never through a link); a folder or a
    link in its place is one :class:`LockError` line."""
    with tree.folder(WORK_DIR, create=True) as work:
        try:
            return os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=work)
        except OSError as error:
            kind = {errno.EISDIR: "it is a folder", errno.ELOOP: "it is a link"}.get(error.errno)
            raise LockError(f"cannot lock {tree.shown((WORK_DIR, 'lock'))}: {kind or error.strerror}") from None


class folder_lock:  # noqa: N801 - used as a context manager, like a function
    """An exclusive, non-blocking lock on OUT_DIR (``.denoiser/lock``) for one run.

    The operating system drops it when the process ends, however it ends.
    """

    def __init__(self, tree: OutTree | str | os.PathLike[str]) -> None:
        own = not isinstance(tree, OutTree)
        opened = open_tree(tree) if own else tree
        try:
            self._file = os.fdopen(open_lock_file(opened), "a+")
        finally:
            if own:
                opened.close()
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FolderBusy(f"another run is cleaning into {opened.path}") from None

    def __enter__(self) -> folder_lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def record_run(tree: OutTree, run_id: str) -> None:
    """Note in the ledger that this run writes under OUT_DIR: retention removes only the
    runs noted here (or in the history)."""
    line = f"{run_id} {time.time():.0f}\n".encode()
    with tree.folder(WORK_DIR, create=True) as work:
        fd = os.open("ledger.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=work)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def recorded_runs(tree: OutTree) -> dict[str, float]:
    """``{run id: time it started}`` of the runs the ledger holds."""
    try:
        text = tree.read_bytes(LEDGER).decode("utf-8", "replace")
    except (FileNotFoundError, LinkRefused):
        return {}
    runs = {}
    for line in text.splitlines():
        run, _, when = line.partition(" ")
        with contextlib.suppress(ValueError):
            runs.setdefault(run, float(when))
    return runs


def forget_runs(tree: OutTree, gone: set[str]) -> None:
    """Take ``gone`` out of the ledger (rewritten atomically)."""
    try:
        lines = tree.read_bytes(LEDGER).decode("utf-8", "replace").splitlines()
    except (FileNotFoundError, LinkRefused):
        return
    kept = [line for line in lines if line.partition(" ")[0] not in gone]
    tree.write_bytes(LEDGER, "".join(f"{line}\n" for line in kept).encode())


def shard_reports(tree: OutTree) -> list[str]:
    """Every run's shard reports under ``.denoiser/runs`` (paths relative to OUT_DIR),
    oldest first."""
    found = []
    for run in tree.listdir(RUNS):
        try:
            names = tree.listdir((*RUNS.split("/"), run))
        except (LinkRefused, OSError):
            continue
        for name in names:
            if fnmatch.fnmatch(name, "shard-*.parquet"):
                rel = f"{RUNS}/{run}/{name}"
                info = tree.lstat(rel)
                if info is not None and stat.S_ISREG(info.st_mode):
                    found.append((info.st_mtime, rel))
    return [rel for _, rel in sorted(found)]
