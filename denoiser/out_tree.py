"""OUT_DIR held by a directory descriptor: every path below it is reached without following
a link, so a link planted anywhere under it, or swapped in at any moment, can redirect
neither a write nor a delete.

    with OutTree(out_dir) as tree:          # OUT_DIR itself is the folder the user named
        tree.write_bytes("sub/a.png", data, tmp_dir=".denoiser/tmp")   # atomic
        tree.read_bytes(".denoiser/history.parquet")
        tree.remove_tree(".denoiser/runs/20261204-101500-a1b2c3")

Each folder on a path is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the one
above it (``dir_fd``), files with ``O_NOFOLLOW``, renames and deletes by ``dir_fd``; a link
in the way is a :class:`LinkRefused` naming it. Folders stay open (up to
:data:`OPEN_FOLDERS` of them) for the tree's life, so a write goes into the folder that was
checked, even when a link takes its name a moment later.

SQLite opens its files by path: :func:`denoiser.folders.manifest.sqlite_path` names the
manifest through its open folder (``/proc/self/fd``), after refusing links in the way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from denoiser.files import printable

OPEN_FOLDERS = 256  # folders kept open per tree; beyond that one is opened for each use
_NAME_ROOM = 255 - len(".0123abcd.part") - 1  # bytes of a name left in a temporary's name
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Rel = str | os.PathLike[str] | tuple[str, ...]


class LinkRefused(ValueError):
    """A link, or something that is not a folder, where the product writes or deletes."""


def split(rel: Rel) -> tuple[str, ...]:
    """The components of a plain relative path ('' and () are OUT_DIR itself); anything
    else (absolute, '..') is a ValueError."""
    text = "/".join(rel) if isinstance(rel, tuple) else os.fspath(rel)
    parts = rel if isinstance(rel, tuple) else PurePosixPath(text).parts if text else ()
    if parts and (parts[0] == "/" or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"{printable(text)!r} is not a plain relative path")
    return parts


class OutTree:
    """OUT_DIR (made if ``create`` and absent) and the folders below it, reached by descriptor."""

    def __init__(self, out_dir: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(out_dir)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        # OUT_DIR itself is what the user named, link or not; nothing below it is followed.
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._folders: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> OutTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            fds, self._folders = list(self._folders.values()), {}
            fd, self.fd = self.fd, -1
        for one in [*fds, fd]:
            if one >= 0:
                os.close(one)

    def shown(self, rel: Rel = ()) -> str:
        """``OUT_DIR/rel`` as a message shows it."""
        return printable(str(self.path.joinpath(*split(rel))))

    # -- folders ---------------------------------------------------------------------------

    def _open_folder(self, parts: tuple[str, ...], create: bool) -> int:
        """A new fd of the folder ``parts`` (the caller closes it)."""
        fd = os.dup(self.fd)
        try:
            for k, part in enumerate(parts):
                next_fd = self._open_one(fd, parts[: k + 1], create)
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_one(self, parent: int, parts: tuple[str, ...], create: bool) -> int:
        """The fd of the folder ``parts[-1]`` in ``parent``, made if absent and ``create``.
        A folder that another process moves away between the making and the opening is
        made again, a few times, then refused."""
        name = parts[-1]
        for _attempt in range(5):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refused(parts, parent, name, create) from None
                raise
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                pass
        raise LinkRefused(f"{self.shown(parts)} keeps changing (moved or replaced while opened); not written")

    def _refused(self, parts: tuple[str, ...], parent: int, name: str, writing: bool) -> LinkRefused:
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if mode == 0 or stat.S_ISDIR(mode):  # a link or a file a moment ago, gone or a folder now
            return LinkRefused(f"{self.shown(parts)} keeps changing (moved or replaced while opened); not written")
        what = "a link" if stat.S_ISLNK(mode) else "not a folder"
        return LinkRefused(f"{self.shown(parts)} is {what}; refusing to {'write' if writing else 'go'} through it")

    @contextlib.contextmanager
    def folder(self, rel: Rel = (), *, create: bool = False, keep: bool = False) -> Iterator[int]:
        """The fd of the folder ``rel`` (OUT_DIR for ''), for the block's length (with
        ``keep``, for the tree's). Raises FileNotFoundError when it is absent and not
        ``create``, LinkRefused where a link or a file is in the way."""
        parts = split(rel)
        if not parts:
            yield self.fd
            return
        with self._lock:
            found = self._folders.get(parts)
        if found is None:
            fd = self._open_folder(parts, create)
            with self._lock:
                if parts in self._folders:  # another thread opened it meanwhile
                    os.close(fd)
                    found = self._folders[parts]
                elif keep or len(self._folders) < OPEN_FOLDERS:
                    found = self._folders[parts] = fd
            if found is None:  # past the limit: opened for this use only
                try:
                    yield fd
                finally:
                    os.close(fd)
                return
        yield found

    @contextlib.contextmanager
    def _parent(self, rel: Rel, create: bool, keep: bool = False) -> Iterator[tuple[int, str]]:
        parts = split(rel)
        if not parts:
            raise ValueError("a file's path is needed, not OUT_DIR itself")
        with self.folder(parts[:-1], create=create, keep=keep) as fd:
            yield fd, parts[-1]

    def make_folder(self, rel: Rel) -> None:
        """Make the folder ``rel`` and those above it, refusing links and files in the way."""
        with self.folder(rel, create=True):
            return

    # -- entries ---------------------------------------------------------------------------

    def lstat(self, rel: Rel) -> os.stat_result | None:
        """The entry at ``rel`` as it is (a link is a link), or None when it is absent."""
        try:
            with self._parent(rel, create=False) as (parent, name):
                return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def is_file(self, rel: Rel) -> bool:
        """Whether ``rel`` is a regular file (not a link to one)."""
        try:
            found = self.lstat(rel)
        except (LinkRefused, OSError):
            return False
        return found is not None and stat.S_ISREG(found.st_mode)

    def listdir(self, rel: Rel = ()) -> list[str]:
        """The names in the folder ``rel``; [] when it is absent."""
        try:
            with self.folder(rel) as fd:
                return os.listdir(fd)
        except FileNotFoundError:
            return []

    def read_bytes(self, rel: Rel) -> bytes:
        """The content of the regular file ``rel``; a link there is refused."""
        with self._parent(rel, create=False) as (parent, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise LinkRefused(f"{self.shown(rel)} is a link; refusing to read through it") from None
                raise
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise LinkRefused(f"{self.shown(rel)} is not a regular file")
            return handle.read()

    def write_bytes(self, rel: Rel, data: bytes, *, tmp_dir: Rel | None = None, durable: bool = True,
                    replace_links: bool = True) -> None:
        """Write ``rel`` atomically: a new temporary file in ``tmp_dir`` (default: beside
        ``rel``) renamed over it, both by descriptor. Folders on the way are made. An
        existing link at ``rel`` is replaced, never written through (refused instead when
        not ``replace_links``). ``durable`` flushes the file before the rename."""
        with contextlib.ExitStack() as stack:
            parent, name = stack.enter_context(self._parent(rel, create=True))
            if not replace_links:
                found = self.lstat(rel)
                if found is not None and stat.S_ISLNK(found.st_mode):
                    raise LinkRefused(f"{self.shown(rel)} is a link; refusing to write through it")
            tmp_fd = stack.enter_context(self.folder(tmp_dir, create=True)) if tmp_dir is not None else parent
            encoded = os.fsencode(name)
            stem = os.fsdecode(encoded[:_NAME_ROOM]) if len(encoded) > _NAME_ROOM else name
            while True:
                tmp = f".{stem}.{secrets.token_hex(4)}.part"
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o666, dir_fd=tmp_fd)
                    break
                except FileExistsError:
                    continue
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if durable:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=parent)
                except FileNotFoundError:  # its folder was replaced (and so removed) since it was opened
                    raise LinkRefused(f"{self.shown(rel)}'s folder keeps changing (moved or replaced while "
                                      "written); not written") from None
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=tmp_fd)
                raise

    def rename(self, src: Rel, dst: Rel) -> None:
        with self._parent(src, create=False) as (src_parent, src_name), \
                self._parent(dst, create=True) as (dst_parent, dst_name):
            os.rename(src_name, dst_name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)

    def unlink(self, rel: Rel) -> bool:
        """Remove the file (or the link itself) at ``rel``; whether there was one."""
        try:
            with self._parent(rel, create=False) as (parent, name):
                os.unlink(name, dir_fd=parent)
            return True
        except FileNotFoundError:
            return False

    def remove_tree(self, rel: Rel) -> bool:
        """Remove the folder ``rel`` and everything in it, by descriptor (a link inside is
        removed as a link, never followed); a link or a file at ``rel`` is refused. Whether
        there was one."""
        parts = split(rel)
        try:
            with self._parent(parts, create=False) as (parent, name):
                found = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(found.st_mode):
                    what = "a link" if stat.S_ISLNK(found.st_mode) else "not a folder"
                    raise LinkRefused(f"{self.shown(parts)} is {what}; not removed")
                with self._lock:  # the folders below it are going: forget their descriptors
                    for key in [k for k in self._folders if k[: len(parts)] == parts]:
                        os.close(self._folders.pop(key))
                shutil.rmtree(name, dir_fd=parent)
            return True
        except FileNotFoundError:
            return False

    def walk(self, rel: Rel = ()) -> Iterator[tuple[tuple[str, ...], list[str], int]]:
        """``(folder parts, file names, folder fd)`` for every folder under ``rel``, links
        never followed (:func:`os.fwalk`); nothing when ``rel`` is absent."""
        base = split(rel)
        try:
            with self.folder(base) as fd:
                for top, _dirs, files, dir_fd in os.fwalk(dir_fd=fd):
                    parts = base + tuple(p for p in PurePosixPath(top).parts if p != ".")
                    yield parts, files, dir_fd
        except FileNotFoundError:
            return
