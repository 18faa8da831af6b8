"""Device choice (the precision is :mod:`denoiser.models.precision`'s)."""

from __future__ import annotations

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
