"""Batched denoising with a trained model."""

from __future__ import annotations

import numpy as np
import torch

from denoiser.data import from_model_output, to_model_input


def denoise(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Denoised float32 ``(N, H, W)`` images in [0, 1] from uint8 or float ``(N, H, W)`` input.

    Runs in float32 under ``torch.inference_mode``, one batch at a time, so the output does
    not depend on ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model = model.to(device).eval()
    out = np.empty(images.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start : start + batch_size]).to(device)
            out[start : start + len(x)] = from_model_output(torch.sigmoid(model(x)))
    return out
