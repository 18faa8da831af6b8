"""The image conventions used across the library.

- stored images are ``uint8`` arrays ``(N, H, W)``; labels ``uint8`` ``(N,)``;
- noisy and denoised images are ``float32`` arrays ``(N, H, W)`` in [0, 1];
- the model sees ``float32`` tensors ``(N, 1, H, W)`` in [0, 1]
  (:func:`to_model_input` / :func:`from_model_output`).
"""

from __future__ import annotations

import numpy as np
import torch


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; float images pass through as float32."""
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or float ``(N, H, W)`` in [0, 1] -> float32 ``(N, 1, H, W)``."""
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(to_float(images))).unsqueeze(1)


def from_model_output(images: torch.Tensor) -> np.ndarray:
    """float ``(N, 1, H, W)`` tensor -> float32 ``(N, H, W)`` array."""
    return images.detach().float().cpu().squeeze(1).numpy()


def by_shape(images: list[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``images`` grouped by their (H, W) shape, in order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        if np.ndim(image) != 2:
            raise ValueError(f"expected a (H, W) image, got shape {np.shape(image)}")
        groups.setdefault(np.shape(image), []).append(i)
    return groups
