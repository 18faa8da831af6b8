"""The machine's limit and how busy it is: peak FLOP/s per precision, model FLOPs, background load.

The limit is the fastest of two kernels measured in the precision a figure ran in: a square
matrix multiply, and a 64 -> 64 channel 3x3 convolution (the models' busiest layer shape,
channels-last, batch 256). FLOPs are those of a direct convolution (2 x multiply-adds, as
``torch.utils.flop_counter`` counts them). A fraction of the limit above 1 can then only mean
that a kernel beat both (a fast algorithm such as Winograd does fewer multiplications than
it is credited with); :func:`limit_note` says so beside the figure.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from denoiser.threads import busy_jiffies

QUIET_LOAD = 0.15  # a repetition is "quiet" when other processes used < 15% of the CPUs


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
    before, own_before = busy_jiffies(), _own_jiffies()
    value = fn()
    after, own_after = busy_jiffies(), _own_jiffies()
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


def conv_flops(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """Sustained direct-convolution FLOP/s of a 64 -> 64 channel 3x3 conv on 28x28 images
    (channels-last, batch 256), in ``dtype`` (bf16 through autocast, as the product runs it)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device, memory_format=torch.channels_last).eval()
    x = torch.rand(256, 64, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    per_call = 2 * 256 * 64 * 64 * 9 * 28 * 28
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        conv(x)  # warm-up: kernel selection
        _sync(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            count += 1
        _sync(device)
    return per_call * count / (time.perf_counter() - start)


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """The limit in ``dtype``: the faster of a matmul and a direct 3x3 convolution."""
    measured = {"matmul": matmul_flops(device, dtype), "conv3x3": conv_flops(device, dtype)}
    kernel = max(measured, key=measured.get)
    return {**measured, "peak": measured[kernel], "kernel": kernel}


def limit_note(fraction: float) -> str | None:
    """Why a fraction of the limit is above 1 (None when it is not)."""
    if fraction <= 1:
        return None
    return ("above the limit: the convolution kernels do fewer multiplications than a direct "
            "convolution is credited with (Winograd-style algorithms), or run faster than the "
            "kernels measured as the peak")


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


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what platform says."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
