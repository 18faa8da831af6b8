"""Device choice and mixed precision, in one place."""

from __future__ import annotations

import contextlib

import torch

from denoiser.choices import DEVICES


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu. An explicit device that is missing is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but MPS is not available here")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (bf16 where supported, else fp16); None elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Mixed-precision autocast on CUDA; a no-op elsewhere (CPU stays in float32)."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 autocast (bf16 and float32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
