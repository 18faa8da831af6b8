"""Training and denoising throughput: the product's code beside a plain reference.

The references are written the way a tutorial would: the same ConvDAE in eager NCHW
float32, a ``DataLoader`` over a ``TensorDataset`` with numpy noise per batch for training,
and one image at a time for denoising. Both sides get the same images.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from denoiser.models.infer import denoise
from denoiser.models.networks import build_model
from denoiser.models.precision import FP32, Precision, resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.training.loop import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 28, 28) images with MNIST-like statistics: a few bright strokes on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    rows = rng.integers(6, 22, size=(n, 3))
    cols = rng.integers(6, 22, size=(n, 3))
    for k in range(3):
        for d in range(-2, 3):
            images[np.arange(n), np.clip(rows[:, k] + d, 0, 27), cols[:, k]] = 255
            images[np.arange(n), rows[:, k], np.clip(cols[:, k] + d, 0, 27)] = 255
    return images


def product_train(images: np.ndarray, model: str, device: torch.device, precision: Precision = FP32,
                  epochs: int = 1) -> float:
    """Images/s of :func:`denoiser.training.loop.train`'s epoch loop (validation not counted)."""
    config = TrainConfig.recipe(model, epochs=epochs, batch_size=128, val_fraction=0.02)
    result = train(images, config, device=device, precision=precision, show_progress=False)
    return float(np.median([e.images_per_second for e in result.history]))


def reference_train(images: np.ndarray, device: torch.device, epochs: int = 1) -> float:
    """Images/s of the plain loop: eager NCHW fp32, DataLoader, numpy noise per batch."""
    model = build_model("conv").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = TensorDataset(torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1))
    loader = DataLoader(data, batch_size=128, shuffle=True)
    rng = np.random.default_rng(0)
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for (clean,) in loader:
            noisy = np.clip(clean.numpy() + 0.5 * rng.standard_normal(clean.shape), 0, 1)
            noisy = torch.from_numpy(noisy.astype(np.float32)).to(device)
            clean = clean.to(device)
            loss = F.binary_cross_entropy_with_logits(model(noisy), clean)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the tutorial logs every step
    _sync(device)
    return epochs * len(images) / (time.perf_counter() - start)


def product_denoise(images: np.ndarray, model: str, device: torch.device,
                    precision: Precision = FP32) -> float:
    """Images/s of :func:`denoiser.models.infer.denoise` at its default batch size."""
    net = build_model(model)
    denoise(net, images[:256], device=device, precision=precision)  # warm-up
    _sync(device)
    start = time.perf_counter()
    denoise(net, images, device=device, precision=precision)
    _sync(device)
    return len(images) / (time.perf_counter() - start)


def reference_denoise(images: np.ndarray, device: torch.device) -> float:
    """Images/s denoising one image at a time, eager NCHW fp32."""
    model = build_model("conv").to(device).eval()
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    with torch.no_grad():
        model(x[:1].to(device))  # warm-up
        _sync(device)
        start = time.perf_counter()
        for i in range(len(x)):
            torch.sigmoid(model(x[i : i + 1].to(device))).cpu()
    _sync(device)
    return len(images) / (time.perf_counter() - start)


def gpu_epoch_seconds(images: np.ndarray, model: str, device: torch.device) -> float:
    """Seconds of one training epoch over ``images`` on the GPU (bf16 where it has it), noise included."""
    config = TrainConfig.recipe(model, epochs=2, batch_size=128, val_fraction=0.02)
    result = train(images, config, device=device, precision=resolve_precision("auto", device),
                   show_progress=False)
    best = max(result.history[1:] or result.history, key=lambda e: e.images_per_second)
    return len(images) / best.images_per_second
