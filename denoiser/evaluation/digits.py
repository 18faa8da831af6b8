"""A digit-identity check: is a cleaned scan still the same digit?

A 3-nearest-neighbour vote over MNIST's training digits (no training, nothing stored;
about 96% on MNIST test). Any scan is first brought to MNIST's look: its own paper and ink
levels mapped to 0 and 1 (:mod:`denoiser.scans.tones`) and its size averaged down to 28x28, so
grey paper, dark ink and a 3x scale do not change the answer by themselves. Both sides are
blurred (Gaussian, sigma 1 px) before the distances: raw-pixel distances also measure
how a stroke's edge is drawn (a denoiser's smooth edge against MNIST's anti-aliasing),
which is not the digit's identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.data.arrays import to_float
from denoiser.scans import tones

SIDE = 28
BLUR_SIGMA = 1.0
NEIGHBOURS = 3


def _blur(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) blurred by a separable Gaussian of BLUR_SIGMA (edges replicated)."""
    r = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(r**2) / (2 * BLUR_SIGMA**2))
    kernel = kernel / kernel.sum()
    x = F.pad(images.unsqueeze(1), (3, 3, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, 7))
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernel.view(1, 1, 7, 1))
    return x.squeeze(1)


def as_mnist(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) scans in [0, 1] -> (N, 784) float32 features: MNIST's look (paper 0, ink 1)
    at 28x28, blurred."""
    x = torch.from_numpy(to_float(images))
    paper, ink = tones.estimate_levels(x, headroom=1.0)
    mapped = tones.to_model(x, paper, ink)
    if mapped.shape[-2:] != (SIDE, SIDE):
        mapped = F.interpolate(mapped.unsqueeze(1), size=(SIDE, SIDE), mode="area").squeeze(1)
    return _blur(mapped).reshape(len(mapped), -1)


class NearestNeighbour:
    """A vote of the 3 nearest (Euclidean, blurred) reference digits in MNIST's look."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need as many labels as images (and some), got {len(images)} and {len(labels)}")
        self.reference = _blur(torch.from_numpy(to_float(images))).reshape(len(images), -1)
        self.norms = (self.reference**2).sum(dim=1)
        self.labels = torch.from_numpy(np.asarray(labels).astype(np.int64))

    def predict(self, scans: np.ndarray, batch: int = 512) -> np.ndarray:
        """The predicted digit of each (H, W) scan."""
        queries = as_mnist(scans)
        out = []
        for start in range(0, len(queries), batch):
            q = queries[start : start + batch]
            distance = self.norms[None, :] - 2 * q @ self.reference.T  # + |q|^2, the same per row
            nearest = self.labels[distance.topk(NEIGHBOURS, dim=1, largest=False).indices]
            out.append(torch.mode(nearest, dim=1).values)  # a tie goes to the smallest label
        return torch.cat(out).numpy() if out else np.empty(0, dtype=np.int64)
