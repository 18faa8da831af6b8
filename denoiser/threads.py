"""How many threads torch trains with on the CPU: the CPUs this process may use, less what
other processes keep busy.

torch starts one compute thread per core and every operator waits at a barrier for all of
them. When another busy process takes one of two cores, one thread runs only part of the
time and the other waits for it at every barrier: the U-Net recipe trained at 296 images/s
beside one competing busy process against 868 alone, 34% (bf16, 2-core AMD EPYC with
avx512_bf16, 2026-12-06, ``python -m bench.load``); a quick check on one thread kept 523
images/s, and OpenMP's passive wait policy made it worse (221). So :class:`CpuShare`
measures, every few seconds, the CPU time other processes used (``/proc/stat`` less this
process's own) and trains on the CPUs left (at least one; all of them again when the others
stop): 508 images/s beside one busy process (61% of idle) and 257 beside three (31%,
against 13% with the fixed count), the idle rate unchanged.

The thread count changes the order of the floating-point sums, so weights trained under a
changing load are not bit for bit those of an idle run. ``DENOISER_THREADS=N`` (or
``OMP_NUM_THREADS``) fixes the count and with it the weights for a seed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV = "DENOISER_THREADS"
#: How often the load is measured: long enough for the kernel's 10 ms ticks to count it,
#: short enough to follow a competitor that starts or stops.
CHECK_SECONDS = 2.0


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def fixed_threads() -> int | None:
    """The thread count the user fixed (``DENOISER_THREADS``, else ``OMP_NUM_THREADS``), or
    None. A value that is not a whole number >= 1 is a one-line error."""
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: must be a whole number of threads >= 1")
            return int(value)
    return None


def threads_for(others: float, cpus: int, most: int) -> int:
    """The threads to use when other processes keep ``others`` of the machine's ``cpus``
    busy: what is left, rounded (so less than half a CPU of others changes nothing), between
    1 and ``most``."""
    return max(1, min(most, round(cpus - others)))


def busy_jiffies() -> tuple[int, int] | None:
    """(busy, all) jiffies of every CPU since boot; None where /proc/stat is not."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_jiffies() -> float:
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK")


class CpuShare:
    """Use as ``with CpuShare(device) as share:`` around a training loop and call
    :meth:`step` after each step; on the way out torch's thread count is restored."""

    def __init__(self, device: torch.device, *, check_seconds: float = CHECK_SECONDS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.check_seconds, self.clock = check_seconds, clock
        self.before = torch.get_num_threads()
        self.fixed = fixed_threads() if device.type == "cpu" else None
        self.most = self.fixed or min(self.before, available_cpus())
        self.cpus = os.cpu_count() or self.most  # /proc/stat counts every CPU of the machine
        self.governed = device.type == "cpu" and self.fixed is None and busy_jiffies() is not None
        self.threads = self.before
        self.changes = 0  # how often the count changed (for the log and the tests)

    def __enter__(self) -> CpuShare:
        if self.fixed is not None or self.governed:
            self._set(self.most)
        self._mark = (self.clock(), busy_jiffies(), _own_jiffies())
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)

    def step(self) -> None:
        """Every ``check_seconds``: measure the others' load since the last look and set the
        threads to what is left."""
        if not self.governed or (now := self.clock()) - self._mark[0] < self.check_seconds:
            return
        busy, own = busy_jiffies(), _own_jiffies()
        (_, busy_then, own_then) = self._mark
        self._mark = (now, busy, own)
        if busy is None or busy_then is None or busy[1] <= busy_then[1]:
            return
        others = max(0.0, (busy[0] - busy_then[0]) - (own - own_then)) / (busy[1] - busy_then[1]) * self.cpus
        wanted = threads_for(others, self.cpus, self.most)
        if wanted != self.threads:
            log.info("other processes keep %.1f of %d CPUs busy: training on %d thread%s", others,
                     self.cpus, wanted, "" if wanted == 1 else "s")
            self._set(wanted)
            self.changes += 1

    def _set(self, threads: int) -> None:
        torch.set_num_threads(threads)
        self.threads = threads
