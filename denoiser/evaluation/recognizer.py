"""A digit recogniser trained on MNIST, the judge of cleaning on real scans without clean truth.

People clean digit scans to read them: where no clean copy exists, a cleaning is better when
a recogniser reads its output correctly more often than the scan. This recogniser is the
product's fixed reader for that. It is trained on MNIST's training digits only (with small
shifts, rotations, scalings and stroke widths), stored in the model store like the other
models (``models_dir/reader/``, its MNIST test accuracy in the metadata), and used by
nothing that cleans, adapts or gates, so that it cannot be fitted to what it judges.

Every image it reads goes through one fixed look (:func:`reader_look`), whichever method
made it: dark ink on light paper is inverted to MNIST's polarity, the paper is set to 0 and
the ink to 1 by the image's own median and 99th percentile, and the digit in the middle is
framed as MNIST's were (:func:`denoiser.checks.shapes.frame`, a fixed rule, not a learnt
model): its ink's box scaled to 20 pixels and its centre of mass put at the centre of 28x28,
pieces of neighbouring digits at the edges left out.

    weights = ensure_reader(models_dir, data_dir)          # about 5 minutes on 2 CPU cores, once
    labels, confidence = load_reader(weights).read(images)  # float (H, W) in [0, 1], any sizes
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from denoiser.checks.shapes import frame
from denoiser.data.mnist import load_dataset
from denoiser.models.checkpoint import load_weights, save_weights

log = logging.getLogger(__name__)

FOLDER = "reader"
VERSION = 2  # part of the stored name and metadata: bump when the look or the training changes


class ReaderNet(nn.Module):
    """Two 3x3 conv pairs (32, 64 channels) with pooling, then 128 units, 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                                  nn.Dropout(0.25), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def reader_look(image: np.ndarray) -> np.ndarray:
    """One gray image (H, W) in [0, 1] (uint8 is scaled) as the reader sees it: (28, 28)
    float32, MNIST's polarity, contrast and framing (see the module)."""
    x = np.asarray(image, dtype=np.float32)
    if x.dtype == np.uint8 or x.max() > 1.0:
        x = x / 255.0
    if np.median(x) > 0.5:  # dark ink on light paper
        x = 1.0 - x
    paper, ink = float(np.median(x)), float(np.percentile(x, 99))
    x = np.clip((x - paper) / max(ink - paper, 0.05), 0.0, 1.0)
    return frame(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()


def _augmented(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random small rotations, scalings, shears and shifts, and thicker or thinner strokes."""
    n = len(x)
    angle = (torch.rand(n, generator=rng) - 0.5) * math.radians(24)
    scale = 0.85 + 0.3 * torch.rand(n, generator=rng)
    shear = (torch.rand(n, generator=rng) - 0.5) * 0.3
    shift = (torch.rand(n, 2, generator=rng) - 0.5) * (4 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    pick = torch.rand(n, generator=rng)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    x = torch.where((pick < 0.2).view(-1, 1, 1, 1), thick, x)
    return torch.where((pick > 0.9).view(-1, 1, 1, 1), torch.maximum(thin, 0.6 * x), x)


class Reader:
    """The trained recogniser."""

    def __init__(self, net: ReaderNet, metadata: dict) -> None:
        self.net, self.metadata = net.eval(), metadata

    @torch.no_grad()
    def read(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The digit each image reads as, and the reader's probability for it."""
        if not images:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        looks = torch.from_numpy(np.stack([reader_look(im) for im in images]))[:, None]
        probs = torch.cat([F.softmax(self.net(looks[i:i + 512]), 1) for i in range(0, len(looks), 512)])
        confidence, labels = probs.max(1)
        return labels.numpy(), confidence.numpy()


def train_reader(train_images: np.ndarray, train_labels: np.ndarray, *, epochs: int = 3, seed: int = 0,
                 batch_size: int = 128) -> ReaderNet:
    """A :class:`ReaderNet` trained on MNIST-like uint8 digits in the reader's look."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.stack([reader_look(im) for im in train_images]))[:, None]
    y = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    net = ReaderNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=rng)
        for start in range(0, len(x), batch_size):
            pick = order[start:start + batch_size]
            loss = F.cross_entropy(net(_augmented(x[pick], rng)), y[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return net.eval()


def reader_path(models_dir: str | os.PathLike[str]) -> Path:
    return Path(models_dir) / FOLDER / f"digit-reader-v{VERSION}.pt"


def load_reader(weights: str | os.PathLike[str]) -> Reader:
    """The reader stored at ``weights`` (``weights_only=True``: no pickled code runs)."""
    net = ReaderNet()
    return Reader(net, load_weights(net, weights, "a digit reader"))


def ensure_reader(models_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                  epochs: int = 3) -> Path:
    """The stored reader, trained on MNIST first if the store lacks it; its metadata records
    its accuracy on MNIST's test set. Raises :class:`denoiser.data.mnist.DataError` when
    MNIST cannot be had."""
    weights = reader_path(models_dir)
    if weights.is_file() and weights.with_suffix(".json").is_file():
        return weights
    mnist = load_dataset(data_dir)
    log.info("training the digit reader that scores cleaning on real scans (MNIST, %d epochs, about 5 minutes "
             "on 2 CPU cores)", epochs)
    started = time.perf_counter()
    net = train_reader(mnist.train_images, mnist.train_labels, epochs=epochs)
    reader = Reader(net, {})
    labels, _ = reader.read(list(mnist.test_images))
    accuracy = float((labels == mnist.test_labels).mean())
    metadata = {"version": VERSION, "epochs": epochs, "mnist_test_accuracy": round(accuracy, 4),
                "seconds": round(time.perf_counter() - started, 1)}
    log.info("digit reader: %.2f%% of MNIST's test digits read correctly", 100 * accuracy)
    return save_weights(net, weights, metadata)
