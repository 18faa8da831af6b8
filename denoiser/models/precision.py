"""Which precision the models compute in: float32, or bfloat16 autocast where it pays.

Whether bf16 pays depends on the processor, not on the code: on an AMD EPYC with avx512_bf16
the U-Net trains and denoises about 2x faster in bf16 autocast (``python -m bench``), while an
Intel Xeon without it ran bf16 convolutions about 2.5x *slower* than float32. So ``auto``
decides by measuring: on a CPU that supports bf16 at all, a short timing of one training step
in each precision (about a second, done once per machine and kept in a cache file); on CUDA,
bf16 wherever the GPU supports it. ``fp32`` and ``bf16`` are taken as asked (bf16 must be
supported).

Autocast keeps the weights, the optimiser and the losses in float32; only the convolutions
run in bf16. Outputs are returned as float32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from denoiser.choices import PRECISIONS

log = logging.getLogger(__name__)

#: bf16 is chosen by ``auto`` on a CPU only when it measures at least this much faster.
MIN_SPEEDUP = 1.15
CACHE_ENV = "DENOISER_PRECISION_CACHE"  # where the measurements are kept (a JSON file)


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is 'fp32' or 'bf16'; ``reason`` says why, for logs and
    metadata."""

    name: str = "fp32"
    reason: str = "float32 by default"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for plain float32."""
        return torch.bfloat16 if self.name == "bf16" else None

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.name, "precision_reason": self.reason}


FP32 = Precision()


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 kernels exist here (not whether they are fast)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """``name`` ('auto', 'fp32', 'bf16') resolved for ``device``; an unsupported 'bf16' is an error."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if name == "fp32":
        return Precision("fp32", "float32 as asked")
    supported = bf16_supported(device)
    if name == "bf16":
        if not supported:
            raise ValueError(f"--precision bf16 was asked for but {_describe(device)} has no bf16 support; "
                             "use --precision fp32 or auto")
        return Precision("bf16", "bf16 as asked")
    if not supported:
        return Precision("fp32", f"auto: {_describe(device)} has no bf16 support")
    if device.type == "cuda":
        return Precision("bf16", "auto: the GPU supports bf16")
    if device.type != "cpu":
        return Precision("fp32", f"auto: bf16 is not used on {device.type}")
    speeds = cpu_speeds()
    ratio = speeds["bf16"] / speeds["fp32"]
    if ratio >= MIN_SPEEDUP:
        return Precision("bf16", f"auto: bf16 measured {ratio:.2f}x as fast as float32 on this CPU")
    return Precision("fp32", f"auto: bf16 measured {ratio:.2f}x the speed of float32 on this CPU "
                             f"(below {MIN_SPEEDUP}x)")


def autocast(device: torch.device | str, precision: Precision = FP32) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for a bf16 precision; a no-op for float32."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=precision.dtype)


def _describe(device: torch.device) -> str:
    return "this GPU" if device.type == "cuda" else f"this {device.type.upper()}"


def machine_key() -> str:
    """What the measurement depends on: the processor, the thread count and torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}|{torch.get_num_threads()} threads|torch {torch.__version__}"


def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "denoiser" / "precision.json"


def cpu_speeds() -> dict[str, float]:
    """Training steps per second in fp32 and bf16 on this CPU, measured once per machine key."""
    path, key = cache_path(), machine_key()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict) and {"fp32", "bf16"} <= set(cached[key]):
        return cached[key]
    speeds = {name: measure_step_rate(Precision(name, "measuring")) for name in ("fp32", "bf16")}
    log.info("measured training steps on this CPU: %.1f/s in float32, %.1f/s in bf16 (kept in %s)",
             speeds["fp32"], speeds["bf16"], path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**cached, key: speeds}, indent=1))
        os.replace(tmp, path)
    except OSError as error:  # a read-only home costs a second per run, not the run
        log.warning("could not keep the precision measurement in %s: %s", path, error)
    return speeds


def measure_step_rate(precision: Precision, seconds: float = 0.4) -> float:
    """Training steps per second of a small conv net shaped like the models' busiest layers
    (64 channels at 28x28, channels-last, batch 64)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 1, 3, padding=1)).to(memory_format=torch.channels_last)
    x = torch.rand(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        with autocast("cpu", precision):
            logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: kernel selection
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps / (time.perf_counter() - started)
