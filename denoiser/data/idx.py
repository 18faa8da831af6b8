"""The IDX file format (MNIST's): a magic number, big-endian dimensions, then raw data.

Files may be gzipped; gzip is recognised by its magic bytes, not by the file name.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

# IDX type codes (the third magic byte) and the numpy dtype each stands for, big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(ValueError):
    """A data file is missing, malformed or not the file it claims to be."""


def parse_idx(content: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into an array; ``source`` names it in errors."""
    if len(content) < 4:
        raise DataError(f"{source}: {len(content)} bytes is too short for an IDX header")
    zero, type_code, ndim = int.from_bytes(content[:2], "big"), content[2], content[3]
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{content[:4].hex()} "
            "(expected 0x0000 then a type code 08-0E and a dimension count)"
        )
    header_end = 4 + 4 * ndim
    if len(content) < header_end:
        raise DataError(f"{source}: truncated IDX header ({len(content)} bytes)")
    dims = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - header_end
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{source}: {problem}: header says {'x'.join(map(str, dims))} "
            f"({expected} data bytes) but the file holds {actual}"
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_content(path: Path) -> bytes:
    """The uncompressed bytes of ``path``; gzip is recognised by its magic, not its name."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot be read ({error})") from error


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file, gzipped (``.gz``) or raw, into an array."""
    path = Path(path)
    return parse_idx(read_content(path), source=str(path))
