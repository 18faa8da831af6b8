"""Folder I/O for real scans: find image files, read any mode to gray, write it back.

Reading turns any Pillow mode into float32 gray ``(H, W)`` in [0, 1], scaled by the mode's
real bit depth: 8-bit by 255, 16-bit by 65535 (never clamped to 8 bits), 32-bit integers
by 65535 when their values fit in 16 bits (16-bit scans Pillow opens as "I") else by
2**31 - 1, floats by 1 or by their maximum. :func:`write_like` writes a gray result back
in the source's format, size, mode and bit depth: RGB becomes gray replicated in RGB, alpha is kept, 16-bit
stays 16-bit. Only the first frame of animated or multi-page files is read.
"""

from __future__ import annotations

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
    that resolves nowhere, with ``problem`` set.
    """
    root = Path(in_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    real_root = root.resolve()
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.exists():
                    entries.append(Entry(rel, path, problem="dangling link"))
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
    scale: float = 255.0
    alpha: np.ndarray | None = None
    save_options: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def _gray_from_rgb(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., :3].astype(np.float32) @ _LUMA) / 255.0


def _int_scale(values: np.ndarray) -> float:
    """Full scale of 32-bit integer pixels: 16-bit content (the usual case) or 31-bit."""
    return 65535.0 if values.size == 0 or values.max() <= 65535 else float(2**31 - 1)


def read_image(path: str | os.PathLike[str], content: bytes | None = None, *,
               reserve: Callable[[int], None] | None = None) -> GrayImage:
    """Read one image file (or its already-read ``content``) as gray.

    ``reserve`` is called with the image's pixel count once its header is read and before
    it is decoded (a caller bounding memory may block there).

    Raises :class:`ImageError` with a one-line reason for anything that is not a readable
    image: empty, truncated, unidentifiable or not the format its name says, a
    decompression bomb, unreadable, not a regular file.
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
                if reserve is not None:
                    reserve(image.width * image.height)
                image.load()
                return _to_gray(image)
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
    except (OSError, SyntaxError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "truncated" in message.lower() or isinstance(error, SyntaxError):
            message = f"truncated or corrupt image ({message})"
        raise ImageError(message) from error


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
    alpha = None
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
        top = float(np.nanmax(values)) if values.size else 1.0
        scale = 1.0 if top <= 1.0 else top
        pixels = np.nan_to_num(values / scale)
    elif mode == "P":
        rgba = np.asarray(image.convert("RGBA"))
        pixels, scale = _gray_from_rgb(rgba), 255.0
        alpha = rgba[..., 3].copy() if "transparency" in image.info else None
    else:  # CMYK, YCbCr, LAB, HSV...: through RGB
        pixels, scale = _gray_from_rgb(np.asarray(image.convert("RGB"))), 255.0
    return GrayImage(np.clip(pixels, 0.0, 1.0), fmt, mode, scale, alpha, options)


def _from_gray(source: GrayImage, gray: np.ndarray) -> Image.Image:
    gray = np.clip(gray, 0.0, 1.0)
    mode = source.mode
    u8 = np.round(gray * 255.0).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(gray >= 0.5).convert("1")
    if mode == "L":
        return Image.fromarray(u8, mode="L")
    if mode == "LA":
        return Image.fromarray(np.dstack([u8, source.alpha]), mode="LA")
    if mode == "RGB":
        return Image.fromarray(np.dstack([u8, u8, u8]), mode="RGB")
    if mode == "RGBA":
        return Image.fromarray(np.dstack([u8, u8, u8, source.alpha]), mode="RGBA")
    if mode == "I;16":
        return Image.fromarray(np.round(gray * 65535.0).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(np.round(gray * source.scale).astype(np.int32))
    if mode == "F":
        return Image.fromarray((gray * source.scale).astype(np.float32), mode="F")
    if mode == "P":
        return _palette_image(gray, source.alpha)
    return Image.fromarray(u8, mode="L").convert(mode)


def _palette_image(gray: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """A gray palette image; with ``alpha``, index 255 is transparent where alpha < 128."""
    if alpha is None:
        return Image.fromarray(np.round(gray * 255.0).astype(np.uint8), mode="L").convert("P")
    index = np.where(alpha < 128, 255, np.round(gray * 254.0)).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    levels = [round(i * 255 / 254) for i in range(255)]
    image.putpalette([v for level in levels for v in (level, level, level)] + [0, 0, 0])
    image.info["transparency"] = 255
    return image


def write_like(source: GrayImage, gray: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``gray`` (H, W) in [0, 1] to ``path`` in the format and mode of ``source``."""
    if gray.shape != source.pixels.shape:
        raise ValueError(f"output is {gray.shape}, the source image is {source.pixels.shape}")
    image = _from_gray(source, gray)
    options = dict(source.save_options)
    if source.format == "JPEG":
        options.setdefault("quality", 95)
    elif source.format == "WEBP":
        options.setdefault("quality", 95)
    image.save(path, format=source.format, **options)

