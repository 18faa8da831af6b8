"""Noise2Void trained from scratch on one folder for a fixed time (CAREamics 0.3.5): the peer
that adaptation is measured against (issue 31). It runs in CAREamics' own environment, made by
``bash bench/n2v-env.sh DIR``, not the product's, and imports nothing from ``denoiser``:

    DIR/bin/python bench/n2v.py NOISY.npz OUT.npz --seconds 150 [--n2v2]

NOISY.npz holds ``images``, (N, H, W) float32 in [0, 1], all one size; OUT.npz gets the
denoised ``images`` in the same shape and ``seconds``/``epochs`` trained. ``bench.adapt --n2v
DIR/bin/python`` runs it on each folder beside adapting and scores it against the truth.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import types

import numpy as np


def without_torchvision() -> None:
    """CAREamics imports torchvision at module level for its LVAE models only; N2V never calls
    it, and no torchvision wheel matches the pinned CPU torch. torchmetrics' optional imports
    are resolved first (torchvision absent), then empty modules stand in for the import."""
    import torchmetrics.functional.image  # noqa: F401
    import torchmetrics.image  # noqa: F401

    vision = types.ModuleType("torchvision")
    vision.__version__ = "absent"
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    vision.transforms, transforms.functional = transforms, functional
    sys.modules.update({"torchvision": vision, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def patch_for(size: int) -> int:
    """The largest power of two that fits the image, at least 16 (CAREamics' UNet of depth 2
    needs a multiple of 8; N2V's own default is 64 on microscopy tiles)."""
    patch = 16
    while patch * 2 <= size:
        patch *= 2
    return patch


def mosaic(images: np.ndarray) -> np.ndarray:
    """The folder's scans side by side in one image (a square-ish grid; the last row's gaps
    at the folder's mean), so that N2V trains on its usual 64x64 patches."""
    n, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    canvas = np.full((rows * h, cols * w), images.mean(), np.float32)
    for i, image in enumerate(images):
        canvas[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = image
    return canvas


def unmosaic(canvas: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    cols = canvas.shape[1] // w
    return np.stack([canvas[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w]
                     for i in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("noisy")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=150.0, help="training time (prediction not counted)")
    parser.add_argument("--n2v2", action="store_true", help="N2V2 (median replacement, blur-pool UNet)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mosaic", action="store_true",
                        help="train and predict on the scans laid side by side in one image (64x64 patches)")
    args = parser.parse_args()
    images = np.load(args.noisy)["images"].astype(np.float32)
    if images.ndim != 3:
        raise SystemExit(f"{args.noisy}: images must be (N, H, W) of one size, not {images.shape}")
    without_torchvision()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config

    data, axes = (mosaic(images), "YX") if args.mosaic else (images, "SYX")
    patch = 64 if args.mosaic else patch_for(min(images.shape[1:]))
    # N2V's 0.2% of pixels masked leaves a 16x16 patch without one; CAREamics asks for one
    # pixel a patch at least, so small patches get two.
    masked = max(0.2, 200 / patch**2)
    # The time budget, not a number of epochs: Lightning stops at max_time.
    trainer = {"max_time": {"seconds": int(round(args.seconds))}, "enable_model_summary": False}
    config = create_advanced_n2v_config(
        experiment_name="folder", data_type="array", axes=axes, patch_size=[patch, patch],
        batch_size=args.batch_size, num_epochs=100_000, use_n2v2=args.n2v2, masked_pixel_percentage=masked,
        trainer_params=trainer, num_workers=0, seed=1)
    with tempfile.TemporaryDirectory() as work:
        model = CAREamist(config, work_dir=work, enable_progress_bar=False)
        started = time.perf_counter()
        model.train(train_data=data)
        trained = time.perf_counter() - started
        epochs = int(model.trainer.current_epoch)
        tiles = dict(tile_size=(256, 256), tile_overlap=(48, 48)) if args.mosaic else dict(tile_size=None)
        predicted = model.predict(data, data_type="array", axes=axes, **tiles)
    if args.mosaic:
        out = unmosaic(np.asarray(predicted[0]).reshape(data.shape), *images.shape)
    else:
        out = np.concatenate([np.asarray(p).reshape(-1, *images.shape[1:]) for p in predicted])
    np.savez(args.out, images=out.astype(np.float32), seconds=trained, epochs=epochs, patch=patch, masked=masked)
    print(f"N2V{'2' if args.n2v2 else ''}: {trained:.0f} s, {epochs} epochs, patch {patch}, {masked:.2f}% masked",
          flush=True)


if __name__ == "__main__":
    main()
