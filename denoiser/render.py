"""What a cleaned file becomes before it is written: the model's output back at the scan's size
and tones, encoded in the scan's format, and the figures of its report row.

:func:`render` is a pure function of picklable inputs, so a shard can run it in worker
processes (:class:`RenderPool`) beside the model instead of in threads that share one
interpreter with it; either way the bytes are the same. Writing them atomically stays with
the shard (:mod:`denoiser.file_steps`).
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from denoiser import quality
from denoiser.images import GrayImage, write_like
from denoiser.metrics import noise_sigma
from denoiser.restore import ScanInfo, finish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """The quality estimate's inputs for one output (:mod:`denoiser.quality`)."""

    sigma: float  # the scan's noise level in the model's look
    recheck: np.ndarray  # the model's output for the output with fresh noise of that level


@dataclass(frozen=True)
class Rendered:
    data: bytes  # the encoded file
    fields: dict[str, Any]  # report columns: recon_mse, noise levels, the quality estimate


def render(image: GrayImage, output: np.ndarray, info: ScanInfo, tones: str, mapped: np.ndarray,
           check: Check | None = None) -> Rendered:
    """The encoded output file of one scan and its report figures (``output``: the model's
    output for ``mapped``, the scan in the model's look)."""
    cleaned = finish(output, info, image.pixels.shape, tone=tones)
    buffer = io.BytesIO()
    write_like(image, cleaned, buffer)
    fields: dict[str, Any] = {"recon_mse": float(np.mean((cleaned - image.pixels) ** 2)),
                              "noise_sigma_in": noise_sigma(image.pixels),
                              "noise_sigma_out": noise_sigma(cleaned)}
    if check is not None:
        reason = quality.ood_reason(output, check.sigma)
        fields.update(noise_level=check.sigma, ood=reason is not None, ood_reason=reason,
                      psnr_est=quality.estimated_psnr(mapped, output, check.recheck, check.sigma,
                                                      paper=info.paper, ink=info.ink))
    return Rendered(buffer.getvalue(), fields)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the processes share the cores with the model's threads


class RenderPool:
    """Runs :func:`render` in ``processes`` worker processes (started once per process and
    shared by its shards), or in the calling thread when ``processes`` is 0."""

    _pools: dict[int, ProcessPoolExecutor] = {}
    _lock = threading.Lock()

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes

    def __call__(self, *args: Any) -> Rendered:
        if not self.processes:
            return render(*args)
        try:
            return self._pool().submit(render, *args).result()
        except BrokenProcessPool:  # a worker was killed (out of memory, say): carry on in threads
            log.warning("a rendering process died; rendering in threads from here on")
            with self._lock:
                self._pools.pop(self.processes, None)
            self.processes = 0
            return render(*args)

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


def default_processes() -> int:
    """Worker processes for rendering: one per core beyond the first, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


atexit.register(RenderPool.shutdown_all)
