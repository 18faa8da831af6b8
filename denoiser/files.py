"""Atomic file writes and small file helpers shared by every stage.

A stage's output either exists whole or not at all: everything is written to a temporary
file in the destination folder and renamed into place (``os.replace`` is atomic on POSIX
and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

_NAME_ROOM = 255 - len(".0123abcd.part") - 1  # bytes of a name left in a temporary's name


def _new_temporary(directory: Path, name: str) -> Path:
    """A new empty file ``.<name>.<random>.part`` in ``directory``.

    Created with the usual permissions (0666 less the umask), unlike ``tempfile.mkstemp``'s
    0600, so the renamed result is readable as any other file the user writes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    encoded = os.fsencode(name)
    if len(encoded) > _NAME_ROOM:  # long names: keep a prefix, so the whole fits in 255 bytes
        name = os.fsdecode(encoded[:_NAME_ROOM])
    while True:
        path = directory / f".{name}.{secrets.token_hex(4)}.part"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(
    destination: str | os.PathLike[str], *, tmp_dir: str | os.PathLike[str] | None = None,
    durable: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``destination`` when the block succeeds.

    The temporary file is beside ``destination``, or in ``tmp_dir`` (which must be on the
    same file system). On an exception it is removed and ``destination`` is untouched.
    ``durable`` flushes the file to disk before the rename; a caller writing thousands of
    small files passes False and calls :func:`os.sync` once for all of them instead.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(Path(tmp_dir) if tmp_dir else destination.parent, destination.name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_private(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600, set before a byte is
    written), atomically: for passwords and the records that hold them."""
    with atomic_path(path) as tmp:
        tmp.chmod(0o600)
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON in ``path``; a file that is not JSON is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({str(error).splitlines()[0]})") from None


def save_array(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return Path(path)


def load_array(path: str | os.PathLike[str]) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=False)
    return Path(path)


# --- file names as messages, reports and the manifest show them --------------------------


def display_name(name: str) -> str:
    """``name`` itself if it is valid UTF-8; else its bytes with the invalid ones escaped
    (``caf\\xe9.png``), which every report, log and Parquet file can hold."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """``text`` for one line of a terminal or a log: control characters (a newline in a
    file name) escaped as ``\\n``, ``\\x1b``; the rest as :func:`display_name` gives it."""
    shown = display_name(text)
    if shown.isprintable():
        return shown
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in shown)


def name_key(name: str) -> str | bytes:
    """The manifest's key for a relative path: the text if it is UTF-8, else its raw bytes
    (SQLite keeps a BLOB apart from any TEXT, so two names never share a key)."""
    return name if display_name(name) == name else os.fsencode(name)
