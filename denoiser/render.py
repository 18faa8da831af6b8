"""Encoding a cleaned scan in its source's format, in the writing threads or in worker
processes beside the model.

:func:`encode` is a pure function of picklable inputs, so a shard can run it in worker
processes (:class:`RenderPool`) instead of in threads that share one interpreter with the
model; either way the bytes are the same. Writing them atomically stays with the shard
(:mod:`denoiser.file_steps`); the output pixels and the report figures come from
:mod:`denoiser.scan_batch`.
"""

from __future__ import annotations

import atexit
import io
import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from denoiser.images import GrayImage, write_like

log = logging.getLogger(__name__)


def encode(image: GrayImage, cleaned: np.ndarray) -> bytes:
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

    def __call__(self, image: GrayImage, cleaned: np.ndarray) -> bytes:
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
