"""File system access that trusts neither folder: reading inputs, making output folders.

A file is read only if, at the moment it is opened, its real path is still inside the
input folder, no link is followed on the way (``O_NOFOLLOW`` on every component below the
folder), it is a regular file (a FIFO would block the run forever, a device could be
endless) and it is no larger than the size limit (checked before a byte is read).
Everything under the output folder goes through :mod:`denoiser.out_tree` instead.

File names that are not UTF-8 stay as Python's surrogate-escaped ``str`` for the file
system; :func:`display_name` gives the escaped form reports and logs show and
:func:`name_key` the lossless key the manifest stores.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from denoiser.choices import MAX_FILE_MB  # the default size limit of one input file
from denoiser.folders.read import ImageError


def _open_below(root: Path, parts: tuple[str, ...]) -> int:
    """An fd for ``root/parts...``, following no link below ``root``; non-blocking, so a
    FIFO opens at once (and is then refused) instead of waiting for a writer."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def read_input(root: str | os.PathLike[str], path: str | os.PathLike[str], *,
               max_bytes: int = MAX_FILE_MB * 10**6) -> bytes:
    """The bytes of the input file ``path`` under ``root``, checked as the module says.

    Raises :class:`ImageError` with a one-line reason for anything it refuses.
    """
    real_root = Path(root).resolve()
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(real_root) or real == real_root:
        raise ImageError("now resolves outside the input folder (a link swapped in after the scan?)")
    try:
        fd = _open_below(real_root, real.relative_to(real_root).parts)
    except FileNotFoundError:
        raise ImageError("file vanished or is a dangling link") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ImageError("became a link after the folder was scanned; not followed") from None
        raise ImageError(f"cannot open: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file (a FIFO, device or socket)")
        if info.st_size > max_bytes:
            raise ImageError(f"file of {info.st_size / 1e6:.0f} MB is over the size limit of "
                             f"{max_bytes / 1e6:g} MB")
        content = handle.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ImageError(f"file grew past the size limit of {max_bytes / 1e6:g} MB while read")
    return content
