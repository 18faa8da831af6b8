"""Shards cleaned in worker processes, one per CPU, each on one core.

In one process the shards' reader and writer threads, the model's threads and the GIL
contend for the cores: on 2 cores every part of the pipeline ran 4-5x slower inside a run
than alone. One process per core, each with one torch thread and one reader and one writer
thread, cleaned 10,000 small scans at 637-668 images/s against 421-488 with the shards in
threads of one process (2-core Intel Xeon with AMX, bf16, 2026-12-06; docs/LOG.md). Starting
a process costs about 2.5 s (importing torch), so runs of fewer than :data:`MIN_FILES`
files, and runs on a GPU (one device, fed best from one process), stay in this process.

    with ShardPool(processes_for(len(entries), options), run_id) as pool:
        part = pool_for(run_id).call("shard 3", clean_part, 3, entries, ...)

The pool is registered under the run's id, so a Prefect task that cleans one shard finds
it (:func:`pool_for`, :func:`denoiser.folders.run.clean_shard_part`); a task run elsewhere
(a Dask worker) cleans in its own process.
A worker process ignores Ctrl-C (the run finishes the shards in flight, as in threads) and
exits within a second when the process that started it dies, so a killed run leaves none.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from denoiser.folders.settings import CleanOptions
from denoiser.models.device import resolve_device
from denoiser.threads import available_cpus

log = logging.getLogger(__name__)

#: Runs of fewer files clean in this process: a worker process takes about 2.5 s to start,
#: which the two cores win back after about 2,500 small scans (2-core AMX Xeon).
MIN_FILES = 4000
#: Shards cleaned at once in this process when no pool cleans them (a GPU, a small run).
IN_PROCESS_AT_ONCE = 2

_in_process = threading.BoundedSemaphore(IN_PROCESS_AT_ONCE)
_pools: dict[str, ShardPool] = {}
_pools_lock = threading.Lock()


def processes_for(files: int, options: CleanOptions) -> int:
    """How many worker processes clean a run of ``files`` files: ``options.processes`` if
    set, else one per available CPU on the CPU for runs of :data:`MIN_FILES` files or more,
    else 0 (this process)."""
    if options.processes is not None:
        return options.processes
    if files < MIN_FILES or resolve_device(options.device).type != "cpu":
        return 0
    cpus = available_cpus()
    return cpus if cpus > 1 else 0


class ShardPool:
    """``processes`` worker processes (0: shards clean in this process), registered under
    ``run_id`` while the ``with`` block lasts."""

    def __init__(self, processes: int, run_id: str | None = None) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self.run_id = run_id
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ShardPool:
        if self.processes:
            self._start()
        if self.run_id is not None:
            with _pools_lock:
                _pools[self.run_id] = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self.run_id is not None:
            with _pools_lock:
                _pools.pop(self.run_id, None)
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> ProcessPoolExecutor:
        """The executor, its processes started now (they import torch while this process
        goes on choosing the model), so that their start is not in the first shards' time."""
        with self._lock:
            if self._executor is None:
                threads = max(1, available_cpus() // self.processes)
                # spawn, not fork: this process runs threads (Prefect's, torch's) that a
                # forked child would inherit half-way through.
                self._executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_worker_setup, initargs=(os.getpid(), threads))
                for _ in range(self.processes):  # each submit with no idle process starts one
                    self._executor.submit(_ready)
            return self._executor

    def call(self, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``: in a worker process, or here when the pool has none (at
        most :data:`IN_PROCESS_AT_ONCE` at a time). A worker that dies (killed, out of
        memory) is a one-line error naming ``what``; the next call starts a new one."""
        if not self.processes:
            with _in_process:
                return fn(*args, **kwargs)
        executor = self._start()
        try:
            return _replay(executor.submit(_logged, fn, *args, **kwargs).result())
        except BrokenProcessPool:
            with self._lock:  # the next call (a retry) starts afresh; one another call started stays
                broken = self._executor is executor
                if broken:
                    self._executor = None
            if broken:
                executor.shutdown(wait=True, cancel_futures=True)  # its manager has ended: quick
            raise RuntimeError(f"the process cleaning {what} died (killed, or out of memory?); "
                               "what it wrote before is recorded, and a retry starts a new one") from None


def pool_for(run_id: str) -> ShardPool:
    """The pool this process holds for ``run_id``; else one that runs calls here (as in a
    Dask worker, which cleans in its own process)."""
    with _pools_lock:
        return _pools.get(run_id) or ShardPool(0)


def _replay(done: tuple[Any, list[tuple[str, int, str]]]) -> Any:
    """The result of a call made in a worker process, its library log records (INFO and
    above) logged again here, in the calling thread, where a Prefect task forwards them to
    its run log (:mod:`flows.logs`)."""
    result, records = done
    for name, level, message in records:
        logging.getLogger(name).log(level, message)
    return result


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def _logged(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Any, list[tuple[str, int, str]]]:
    """``fn(*args, **kwargs)`` in a worker, with the library's log records it made."""
    library = logging.getLogger("denoiser")
    keep = _Keep()
    library.addHandler(keep)
    if library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)
    try:
        return fn(*args, **kwargs), keep.records
    finally:
        library.removeHandler(keep)


def _ready() -> int:
    return os.getpid()


def _worker_setup(parent: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's: it finishes the shards in flight
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """Ends this worker within a second of the process that started it ending (a killed
    run's workers must not go on writing)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
