"""The machine's limit and how busy it is: matmul FLOP/s, model FLOPs, background load."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

QUIET_LOAD = 0.15  # a repetition is "quiet" when other processes used < 15% of the CPUs


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_jiffies() -> int:
    """CPU jiffies used by this process and its waited-for children."""
    times = os.times()
    ticks = os.sysconf("SC_CLK_TCK")
    return round((times.user + times.system + times.children_user + times.children_system) * ticks)


@dataclass
class Measured:
    value: float
    background_load: float | None  # share of all CPUs used by *other* processes meanwhile


def measure(fn: Callable[[], float]) -> Measured:
    """Run ``fn`` (which returns a figure) and record the load other processes put on the CPUs."""
    before, own_before = _cpu_jiffies(), _own_jiffies()
    value = fn()
    after, own_after = _cpu_jiffies(), _own_jiffies()
    if before is None or after is None or after[1] == before[1]:
        return Measured(value, None)
    others = (after[0] - before[0]) - (own_after - own_before)
    return Measured(value, max(0.0, others / (after[1] - before[1])))


def median_of(fn: Callable[[], float], repeats: int) -> dict:
    """The median of ``repeats`` runs of ``fn``, over the quiet ones when there are any."""
    runs = [measure(fn) for _ in range(repeats)]
    quiet = [r for r in runs if r.background_load is None or r.background_load < QUIET_LOAD]
    kept = quiet or runs
    return {
        "median": statistics.median(r.value for r in kept),
        "runs": [round(r.value, 3) for r in runs],
        "background_load": [None if r.background_load is None else round(r.background_load, 3) for r in runs],
        "quiet_runs": len(quiet),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                 seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a square matrix multiply on all cores (or the GPU)."""
    if device.type == "cuda":
        size = 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
        if device.type == "cuda" and count % 10:
            continue
        _sync(device)
    _sync(device)
    return 2 * size**3 * count / (time.perf_counter() - start)


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 matmuls in hardware: CUDA with bf16, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_flops(model: torch.nn.Module, side: int = 28) -> dict[str, float]:
    """FLOPs per image: forward, and a training step (forward + backward, counted)."""
    x = torch.rand(1, 1, side, side)
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        F.binary_cross_entropy_with_logits(model(x), x).backward()
    model.zero_grad(set_to_none=True)
    return {"forward": float(forward), "train_step": float(counter.get_total_flops())}
