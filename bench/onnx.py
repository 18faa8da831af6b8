"""Denoising with onnxruntime beside the product's own CPU path, on the same images.

    python -m bench.onnx                     # the U-Net, 8,192 28x28 images, 3 rounds (about a minute)
    python -m bench.onnx --model conv --images 4096 --json onnx.json

Three ways over the same float32 images in the model's look, in batches of 256, each round
in turn so a slow spell of the machine hits all of them: the product's path
(:func:`denoiser.models.infer.denoise_images`, in the precision ``--precision auto`` picks
here, and in float32 where that is not it), the same network in plain PyTorch float32, and the ONNX export in onnxruntime's CPU
provider (float32, its default threads). Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from denoiser.models.device import resolve_device
from denoiser.models.infer import denoise_images
from denoiser.models.networks import build_model
from denoiser.models.precision import resolve_precision
from denoiser.sharing.onnx_export import to_onnx

BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    import onnxruntime

    torch.manual_seed(0)
    model = build_model(args.model).eval()
    session = onnxruntime.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])
    chosen = resolve_precision("auto", resolve_device("cpu"))
    images = np.random.default_rng(0).random((args.images, 28, 28), dtype=np.float32)
    batches = [images[i : i + BATCH, None] for i in range(0, len(images), BATCH)]

    def product(precision=chosen) -> None:
        denoise_images(model, list(images), batch_size=BATCH, precision=precision)

    def plain() -> None:
        with torch.inference_mode():
            for batch in batches:
                torch.sigmoid(model(torch.from_numpy(batch)))

    def ort() -> None:
        for batch in batches:
            logits = session.run(None, {"image": batch})[0]
            1 / (1 + np.exp(-logits))

    ways = {f"product ({chosen.name})": product, "pytorch fp32": plain, "onnxruntime fp32": ort}
    if chosen.name != "fp32":  # where bf16 is chosen, the product's float32 path too
        ways["product (fp32)"] = lambda: product(resolve_precision("fp32", resolve_device("cpu")))
    for way in ways.values():  # warm-up
        way()
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            rates[name].append(round(args.images / (time.perf_counter() - start), 1))
    median = {name: statistics.median(values) for name, values in rates.items()}
    base = median[f"product ({chosen.name})"]
    print(f"{args.model}, {args.images} images of 28x28 in batches of {BATCH}; load before "
          f"{os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")
    for name, value in median.items():
        print(f"  {name:22} {value:9.1f} images/s  {value / base:5.2f}x the product  (rounds: {rates[name]})")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "model": args.model,
                                               "images": args.images, "images_per_second": rates,
                                               "median": median}, indent=2) + "\n")


if __name__ == "__main__":
    main()
