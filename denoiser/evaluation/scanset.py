"""The scan test set: MNIST digits rendered through each kind of real-scan degradation.

Each kind is a narrow :class:`~denoiser.noise.degrade.Degradation` standing for one thing users
bring: the tutorial's noise, weak noise, a flatbed scanner (grey paper, sensor noise, slight
blur, JPEG), dust on white paper, faded ink on grey paper, uneven lighting, and a scan at
3x MNIST's scale. Every kind is drawn with its own fixed seed, so all methods see the same
images; the truth of each image is its clean scan (same paper, ink and scale, nothing
else), which is what a cleaner should give back.

    truth, degraded = render(images, "faded", seed=0)
"""

from __future__ import annotations

import numpy as np
import torch

from denoiser.data.arrays import to_float
from denoiser.noise.degrade import Degradation, degrade

_NONE = dict(p_texture=0.0, p_lighting=0.0, p_blur=0.0, p_dust=0.0, p_jpeg=0.0, p_second_noise=0.0,
             shuffle=False)
_MNIST_LOOK = dict(dark_ink=0.0, paper=(0.0, 0.0), contrast=(1.0, 1.0))

#: name -> (degradation, resampling scale)
KINDS: dict[str, tuple[Degradation, float]] = {
    "tutorial-noise": (Degradation(**_MNIST_LOOK, **_NONE, p_noise=1.0, noise=(0.5, 0.5),
                               noise_kinds=(1.0, 0.0, 0.0)), 1.0),
    "weak-noise": (Degradation(**_MNIST_LOOK, **_NONE, p_noise=1.0, noise=(0.2, 0.2),
                               noise_kinds=(1.0, 0.0, 0.0)), 1.0),
    "scanner": (Degradation(**{**_NONE, "p_blur": 1.0, "p_jpeg": 1.0, "p_texture": 1.0},
                            dark_ink=1.0, paper=(0.12, 0.25), contrast=(0.7, 0.85),
                            texture=(0.01, 0.03), blur=(0.5, 0.9), p_motion=0.0, jpeg=(50.0, 75.0),
                            p_noise=1.0, noise=(0.12, 0.2), noise_kinds=(0.0, 1.0, 0.0)), 1.0),
    "dust": (Degradation(**{**_NONE, "p_dust": 1.0}, dark_ink=1.0, paper=(0.0, 0.03),
                         contrast=(0.85, 1.0), dust=(0.03, 0.06), p_noise=1.0, noise=(0.02, 0.04),
                         noise_kinds=(1.0, 0.0, 0.0)), 1.0),
    "faded": (Degradation(**_NONE, dark_ink=1.0, paper=(0.2, 0.3), contrast=(0.3, 0.45),
                          p_noise=1.0, noise=(0.25, 0.35), noise_kinds=(1.0, 0.0, 0.0)), 1.0),
    "lighting": (Degradation(**{**_NONE, "p_lighting": 1.0}, dark_ink=1.0, paper=(0.0, 0.15),
                             contrast=(0.6, 0.9), lighting=(0.6, 1.0), p_noise=1.0,
                             noise=(0.05, 0.1), noise_kinds=(1.0, 0.0, 0.0)), 1.0),
    "scale-3x": (Degradation(**_NONE, dark_ink=1.0, paper=(0.0, 0.1), contrast=(0.8, 1.0),
                             scale=(3.0, 3.0), p_noise=1.0, noise=(0.4, 0.4),
                             noise_kinds=(1.0, 0.0, 0.0)), 3.0),
}


def render(images: np.ndarray, kind: str, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, degraded)`` float32 (N, H, W) scans of uint8 or float digits, by seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown scan kind {kind!r}; choose one of {', '.join(KINDS)}")
    spec, scale = KINDS[kind]
    offset = list(KINDS).index(kind)  # each kind draws from its own stream
    rng = torch.Generator().manual_seed(seed * 1000 + offset)
    truth, degraded = degrade(torch.from_numpy(to_float(images)), spec, rng=rng, scale=scale)
    return truth.numpy(), degraded.numpy()
