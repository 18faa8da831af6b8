"""Encoding a cleaned scan in its source's format (mode, bit depth, alpha, EXIF, pages and
frames), in the writing threads or in worker processes beside the model.

:func:`write_like` writes a gray result back in the source's format, size, mode and bit
depth: RGB becomes gray replicated in RGB, alpha is kept, 16-bit stays 16-bit, a float
image gets its own range back, and every page or frame is written.

:func:`encode` is a pure function of picklable inputs, so a shard can run it in worker
processes (:class:`RenderPool`) instead of in threads that share one interpreter with the
model; either way the bytes are the same. Writing them atomically stays with the shard
(:mod:`denoiser.folders.steps`); the output pixels and the report figures come from
:mod:`denoiser.scans.batch`.
"""

from __future__ import annotations

import atexit
import io
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import IO

import numpy as np
from PIL import Image

from denoiser.folders.read import GrayImage

log = logging.getLogger(__name__)


def _levels(gray: np.ndarray, top: float, dtype: type) -> np.ndarray:
    """``gray`` (clipped to [0, 1]) times ``top``, rounded, as ``dtype``; one float
    temporary, whatever the image's size."""
    scaled = np.multiply(gray, top, dtype=np.float32) if top < 2**24 else np.multiply(gray, top)
    np.clip(scaled, 0.0, top, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(dtype)


def _from_gray(source: GrayImage, gray: np.ndarray) -> Image.Image:
    """``gray`` as a Pillow image in ``source``'s mode and bit depth."""
    mode = source.mode
    if mode == "1":
        return Image.fromarray(gray >= 0.5).convert("1")
    if mode == "F":
        stored = np.clip(gray, 0.0, 1.0) * source.scale + source.offset
        return Image.fromarray(stored.astype(np.float32), mode="F")
    if mode == "I;16":
        return Image.fromarray(_levels(gray, 65535.0, np.uint16))
    if mode == "I":
        return Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * source.scale).astype(np.int32))
    if mode == "P":
        return _palette_image(gray, source.alpha)
    u8 = _levels(gray, 255.0, np.uint8)
    if mode == "L":
        return Image.fromarray(u8, mode="L")
    if mode == "LA":
        return Image.fromarray(np.dstack([u8, source.alpha]), mode="LA")
    if mode == "RGB":
        return Image.fromarray(np.dstack([u8, u8, u8]), mode="RGB")
    if mode == "RGBA":
        return Image.fromarray(np.dstack([u8, u8, u8, source.alpha]), mode="RGBA")
    return Image.fromarray(u8, mode="L").convert(mode)


def _palette_image(gray: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """A gray palette image; with ``alpha``, index 255 is transparent where alpha < 128."""
    if alpha is None:
        return Image.fromarray(_levels(gray, 255.0, np.uint8), mode="L").convert("P")
    index = np.where(alpha < 128, 255, _levels(gray, 254.0, np.uint8)).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    levels = [round(i * 255 / 254) for i in range(255)]
    image.putpalette([v for level in levels for v in (level, level, level)] + [0, 0, 0])
    image.info["transparency"] = 255
    return image


def write_like(source: GrayImage, gray: np.ndarray | list[np.ndarray], path: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write ``gray`` (H, W) in [0, 1] to ``path`` in the format and mode of ``source``; for
    a multi-page ``source``, ``gray`` is the list of every page's result, written back as
    pages (TIFF) or frames with their durations (GIF, WebP, PNG)."""
    pages = gray if isinstance(gray, list) else [gray]
    sources = [source, *source.pages]
    if len(pages) != len(sources):
        raise ValueError(f"{len(pages)} results for an image of {len(sources)} pages")
    images = []
    for page, result in zip(sources, pages, strict=True):
        if result.shape != page.pixels.shape:
            raise ValueError(f"output is {result.shape}, the source image is {page.pixels.shape}")
        images.append(_from_gray(page, result))
    options = dict(source.save_options)
    if source.format in ("JPEG", "WEBP"):
        options.setdefault("quality", 95)
    if len(images) > 1:
        options.update(save_all=True, append_images=images[1:])
    images[0].save(path, format=source.format, **options)


def encode(image: GrayImage, cleaned: np.ndarray | list[np.ndarray]) -> bytes:
    """The bytes of ``cleaned`` written like ``image`` (its format, mode, bit depth, alpha, EXIF)."""
    buffer = io.BytesIO()
    write_like(image, cleaned, buffer)
    return buffer.getvalue()


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the processes share the cores with the model's threads


class RenderPool:
    """Runs :func:`encode` in ``processes`` worker processes (started once per process and
    shared by its shards), or in the calling thread when ``processes`` is 0."""

    _pools: dict[int, ProcessPoolExecutor] = {}
    _lock = threading.Lock()

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes

    def __call__(self, image: GrayImage, cleaned: np.ndarray | list[np.ndarray]) -> bytes:
        if not self.processes:
            return encode(image, cleaned)
        try:
            return self._pool().submit(encode, image, cleaned).result()
        except BrokenProcessPool:  # a worker was killed (out of memory, say): carry on in threads
            log.warning("a rendering process died; rendering in threads from here on")
            with self._lock:
                self._pools.pop(self.processes, None)
            self.processes = 0
            return encode(image, cleaned)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            pool = self._pools.get(self.processes)
            if pool is None:
                # spawn, not fork: the parent runs threads (the model's, the readers') that a
                # forked child would inherit half-way through.
                pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_one_thread)
                self._pools[self.processes] = pool
            return pool

    @classmethod
    def shutdown_all(cls) -> None:
        with cls._lock:
            pools, cls._pools = list(cls._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


atexit.register(RenderPool.shutdown_all)
