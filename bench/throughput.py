"""Training and denoising throughput of the conv DAE on this machine.

    python bench/throughput.py [--device auto] [--batch-size 128] [--steps 30]

Prints images/s for training steps (the seed's recipe: Adam, BCE, batch 128) and for
batched denoising. Speed targets live here, not in the test suite.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.device import autocast, resolve_device
from denoiser.infer import denoise
from denoiser.model import ConvDAE


def bench_train(device: torch.device, batch_size: int, steps: int) -> float:
    model = ConvDAE().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    for step in range(steps + 3):
        if step == 3:  # after warm-up
            _sync(device)
            start = time.perf_counter()
        with autocast(device):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def bench_denoise(device: torch.device, batch_size: int, images: int) -> float:
    """Through the product's own path, :func:`denoiser.infer.denoise`."""
    model = ConvDAE()
    x = np.random.default_rng(0).random((images, 28, 28), dtype=np.float32)
    denoise(model, x[:batch_size], batch_size=batch_size, device=device)  # warm-up
    start = time.perf_counter()
    denoise(model, x, batch_size=batch_size, device=device)
    return images / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (default: 128)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps (default: 30)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"train:   {bench_train(device, args.batch_size, args.steps):9,.0f} images/s")
    print(f"denoise: {bench_denoise(device, 512, 10240):9,.0f} images/s (batch 512)")


if __name__ == "__main__":
    main()
