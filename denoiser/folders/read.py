"""Folder input for real scans: find image files and read any mode to gray.

Reading turns any Pillow mode into float32 gray ``(H, W)`` in [0, 1], scaled by the mode's
real bit depth: 8-bit by 255, 16-bit by 65535 (never clamped to 8 bits), 32-bit integers
by 65535 when their values fit in 16 bits (16-bit scans Pillow opens as "I") else by
2**31 - 1, floats by their range (negative values included; NaN or infinite values are
refused). Every page of a multi-page TIFF and every frame of an animated GIF, WebP or PNG
is read (:attr:`GrayImage.pages`), with each frame's duration; a multi-page file of a
format that cannot be written back with its pages is refused. :mod:`denoiser.folders.encode`
writes a result back alike.
"""

from __future__ import annotations

import errno
import io
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

#: The file name suffixes read, and the one Pillow format each may hold: a file is opened
#: only as what its name says (an XPM or Sun raster named .png is an error row, never a
#: format that cannot be written back).
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF"}
IMAGE_SUFFIXES = frozenset(SUFFIX_FORMATS)
#: Formats whose pages or frames are all cleaned and written back.
MULTI_PAGE_FORMATS = frozenset({"TIFF", "GIF", "WEBP", "PNG"})
#: Formats whose EXIF (orientation included) is written back unchanged. Pillow applies a
#: TIFF's orientation tag as it decodes, so a TIFF output is written upright, without it.
EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


class ImageError(ValueError):
    """A file that cannot be read or written as an image; the message is one line."""


@dataclass(frozen=True)
class Entry:
    """One input file found under the input folder.

    ``problem`` is set for files that cannot be processed (a dangling link), ``skip`` for
    files left alone on purpose (a link that leads outside the input folder).
    """

    rel: str  # POSIX path relative to the input folder
    path: Path
    problem: str | None = None
    skip: str | None = None


def scan_folder(in_dir: str | os.PathLike[str]) -> list[Entry]:
    """Image files under ``in_dir``, recursively, sorted by relative path.

    Hidden files and folders (names starting with '.') are left out, and so are links to
    folders. A file link that resolves outside ``in_dir`` is listed with ``skip`` set; one
    that resolves nowhere or into a loop, with ``problem`` set; a folder that cannot be
    read is listed (its relative path) with ``problem`` saying why, and the rest go on.
    """
    root = Path(in_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    real_root = root.resolve()
    entries = []

    def unreadable(error: OSError) -> None:
        path = Path(error.filename) if error.filename else root
        rel = path.relative_to(root).as_posix() if path != root else "."
        entries.append(Entry(rel, path, problem=f"folder cannot be read: {error.strerror or error}"))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except FileNotFoundError:
                    entries.append(Entry(rel, path, problem="dangling link"))
                    continue
                except (OSError, RuntimeError) as error:  # a loop of links, a component unreadable
                    why = "a loop of links" if isinstance(error, RuntimeError) or \
                        getattr(error, "errno", None) == errno.ELOOP else (error.strerror or str(error))
                    entries.append(Entry(rel, path, problem=f"link cannot be resolved: {why}"))
                    continue
                if not target.is_relative_to(real_root):
                    entries.append(Entry(rel, path, skip="link resolves outside the input folder"))
                    continue
            entries.append(Entry(rel, path))
    return sorted(entries, key=lambda e: e.rel)


@dataclass
class GrayImage:
    """A scan as float32 gray in [0, 1] plus what is needed to write it back alike."""

    pixels: np.ndarray
    format: str
    mode: str
    scale: float = 255.0  # the stored value of gray 1 is offset + scale
    alpha: np.ndarray | None = None
    save_options: dict[str, Any] = field(default_factory=dict)
    offset: float = 0.0  # the stored value of gray 0 (float images reaching below 0)
    pages: list[GrayImage] = field(default_factory=list)  # the pages or frames after the first

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def all_pixels(self) -> list[np.ndarray]:
        """Every page's pixels, the first page's first."""
        return [self.pixels, *(page.pixels for page in self.pages)]

    @property
    def size(self) -> int:
        """Decoded pixels of all pages."""
        return sum(p.size for p in self.all_pixels)


def _gray_from_rgb(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., :3].astype(np.float32) @ _LUMA) / 255.0


def _int_scale(values: np.ndarray) -> float:
    """Full scale of 32-bit integer pixels: 16-bit content (the usual case) or 31-bit."""
    return 65535.0 if values.size == 0 or values.max() <= 65535 else float(2**31 - 1)


def read_image(path: str | os.PathLike[str], content: bytes | None = None, *,
               reserve: Callable[[int], None] | None = None, max_pixels: int | None = None) -> GrayImage:
    """Read one image file (or its already-read ``content``) as gray, every page of it.

    ``reserve`` is called with the pixel count of all pages once the headers are read and
    before anything is decoded (a caller bounding memory may block there). An image of
    more than ``max_pixels`` pixels is refused before it is decoded.

    Raises :class:`ImageError` with a one-line reason for anything that is not a readable
    image: empty, truncated, unidentifiable or not the format its name says, a
    decompression bomb, over the pixel limit, pages a format cannot keep, unreadable, not a
    regular file.
    """
    path = Path(path)
    expected = SUFFIX_FORMATS.get(path.suffix.lower())
    try:
        if content is None:
            content = path.read_bytes()
        if not content:
            raise ImageError("empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=[expected] if expected else None) as image:
                sizes = _page_sizes(image)
                total = sum(w * h for w, h in sizes)
                if max_pixels is not None and total > max_pixels:
                    shape = f"{sizes[0][0]}x{sizes[0][1]}" + (f" in {len(sizes)} pages" if len(sizes) > 1 else "")
                    raise ImageError(f"{shape} is {total:,} pixels, over the limit of {max_pixels:,} "
                                     "decoded pixels per file")
                if len(sizes) > 1 and (image.format or "") not in MULTI_PAGE_FORMATS:
                    raise ImageError(f"holds {len(sizes)} pages, which a {image.format} output cannot keep")
                if reserve is not None:
                    reserve(total)
                return _read_pages(image, len(sizes))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        size = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageError(f"decompression bomb refused: {size.group(1) + ' pixels' if size else 'an image'} "
                         f"over the limit of {Image.MAX_IMAGE_PIXELS} pixels") from None
    except UnidentifiedImageError:
        if expected:
            raise ImageError(f"not a {expected} image, as its name says") from None
        raise ImageError("not an image Pillow can identify") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except FileNotFoundError:
        raise ImageError("file vanished or is a dangling link") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "truncated" in message.lower() or isinstance(error, (SyntaxError, EOFError)):
            message = f"truncated or corrupt image ({message})"
        raise ImageError(message) from error


#: Pages read from one file at most (a file of a million tiny pages is refused, not walked).
MAX_PAGES = 10_000


def _page_sizes(image: Image.Image) -> list[tuple[int, int]]:
    """(width, height) of every page, from the headers alone; animation frames share the
    canvas's size."""
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > MAX_PAGES:
        raise ImageError(f"holds {frames:,} pages, over the limit of {MAX_PAGES:,}")
    if frames == 1 or image.format != "TIFF":
        return [image.size] * frames
    sizes = []
    for k in range(frames):
        image.seek(k)
        sizes.append(image.size)
    image.seek(0)
    return sizes


def _read_pages(image: Image.Image, frames: int) -> GrayImage:
    first: GrayImage | None = None
    durations = []
    for k in range(frames):
        if k:
            image.seek(k)
        image.load()
        page = _to_gray(image)
        durations.append(image.info.get("duration"))
        if first is None:
            first = page
        else:
            first.pages.append(page)
    assert first is not None
    if frames > 1 and image.format in ("GIF", "WEBP", "PNG"):
        if all(d is not None for d in durations):
            first.save_options["duration"] = durations
        first.save_options["loop"] = image.info.get("loop", 0)
    return first


def _to_gray(image: Image.Image) -> GrayImage:
    mode, fmt = image.mode, image.format or "PNG"
    options: dict[str, Any] = {}
    if "dpi" in image.info:
        options["dpi"] = image.info["dpi"]
    if fmt == "TIFF" and image.info.get("compression") not in (None, "raw"):
        options["compression"] = image.info["compression"]
    exif = image.getexif()
    if exif and fmt in EXIF_FORMATS:  # orientation and the rest, written back unchanged
        options["exif"] = exif.tobytes()
    alpha, offset = None, 0.0
    if mode == "1":
        pixels, scale = np.asarray(image, dtype=np.float32), 1.0
    elif mode == "L":
        pixels, scale = np.asarray(image, dtype=np.float32) / 255.0, 255.0
    elif mode == "LA":
        array = np.asarray(image)
        pixels, alpha, scale = array[..., 0].astype(np.float32) / 255.0, array[..., 1].copy(), 255.0
    elif mode in ("RGB", "RGBA"):
        array = np.asarray(image)
        pixels, scale = _gray_from_rgb(array), 255.0
        alpha = array[..., 3].copy() if mode == "RGBA" else None
    elif mode.startswith("I;16"):
        pixels, scale = np.asarray(image).astype(np.float32) / 65535.0, 65535.0
        mode = "I;16"
    elif mode == "I":
        values = np.asarray(image).astype(np.float64)
        scale = _int_scale(values)
        pixels = (values / scale).astype(np.float32)
    elif mode == "F":
        values = np.asarray(image).astype(np.float32)
        if values.size and not np.isfinite(values).all():
            raise ImageError("float image holds NaN or infinite values; refusing to guess what they mean")
        low = min(0.0, float(values.min())) if values.size else 0.0
        scale = max(1.0, float(values.max()) if values.size else 1.0) - low
        offset = low
        pixels = (values - low) / scale
    elif mode == "P":
        rgba = np.asarray(image.convert("RGBA"))
        pixels, scale = _gray_from_rgb(rgba), 255.0
        alpha = rgba[..., 3].copy() if "transparency" in image.info else None
    else:  # CMYK, YCbCr, LAB, HSV...: through RGB
        pixels, scale = _gray_from_rgb(np.asarray(image.convert("RGB"))), 255.0
    np.clip(pixels, 0.0, 1.0, out=pixels)
    return GrayImage(pixels, fmt, mode, scale, alpha, options, offset)
