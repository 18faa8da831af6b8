"""Speed into quality: candidate recipes for the default model, each trained with the product's
:func:`denoiser.training.loop.train` and scored on the full MNIST test set with the tutorial's noise.

    python -m bench.recipe unet --epochs 14                   # the default model, 14 epochs
    python -m bench.recipe unet3 --epochs 12 --precision bf16
    python -m bench.recipe unet --epochs 8 --precision fp32 --json out.json

Candidates beside the product's ``unet`` (32 channels, two poolings): ``unet3`` (a third
level, 28 -> 14 -> 7 -> 4), ``unetmid`` (the 7x7 middle four convolutions deep at 128
channels), ``unet48`` (48 channels), ``unetlite`` (the first decoder convolution at half
size). Each line printed (and appended to ``--json``) gives
the training seconds, images/s per epoch, validation PSNR per epoch, and the test set's
mean PSNR and SSIM, so that what each change gains can be read one change at a time.
Needs the MNIST files (``--data-dir`` or ``$DENOISER_MNIST_DIR``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from denoiser.data.arrays import to_float
from denoiser.data.mnist import load_dataset
from denoiser.metrics import psnr, ssim
from denoiser.models import networks as models
from denoiser.models.infer import denoise
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import noisy_copy
from denoiser.training import loop as training


def _conv(i: int, o: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, padding=1)


class UNet3(nn.Module):
    """The product's U-Net with a third level (28 -> 14 -> 7 -> 4), additive skips."""

    def __init__(self, w: int = 32) -> None:
        super().__init__()
        w2 = 2 * w
        self.e1a, self.e1b, self.e2a, self.e2b = _conv(1, w), _conv(w, w), _conv(w, w2), _conv(w2, w2)
        self.e3a, self.e3b, self.ma, self.mb = _conv(w2, w2), _conv(w2, w2), _conv(w2, w2), _conv(w2, w2)
        self.d3, self.d2a, self.d2b = _conv(w2, w2), _conv(w2, w2), _conv(w2, w2)
        self.d1a, self.d1b, self.head = _conv(w2, w), _conv(w, w), _conv(w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, pool = F.relu, lambda t: F.max_pool2d(t, 2, ceil_mode=True)
        up = lambda t, like: F.interpolate(t, size=like.shape[-2:], mode="nearest")  # noqa: E731
        e1 = r(self.e1b(r(self.e1a(x))))
        e2 = r(self.e2b(r(self.e2a(pool(e1)))))
        e3 = r(self.e3b(r(self.e3a(pool(e2)))))
        m = r(self.mb(r(self.ma(pool(e3)))))
        d3 = r(self.d3(up(m, e3) + e3))
        d2 = r(self.d2b(r(self.d2a(up(d3, e2))) + e2))
        d1 = r(self.d1b(r(self.d1a(up(d2, e1))) + e1))
        return self.head(d1)


class UNetMid(nn.Module):
    """The product's U-Net with its 7x7 middle ``depth`` convolutions deep at ``mid`` channels."""

    def __init__(self, w: int = 32, mid: int = 128, depth: int = 4) -> None:
        super().__init__()
        w2 = 2 * w
        self.enc1a, self.enc1b, self.enc2a, self.enc2b = _conv(1, w), _conv(w, w), _conv(w, w2), _conv(w2, w2)
        self.mid = nn.ModuleList([_conv(w2 if i == 0 else mid, mid) for i in range(depth)])
        self.mid_out, self.dec2 = _conv(mid, w2), _conv(w2, w2)
        self.dec1a, self.dec1b, self.head = _conv(w2, w), _conv(w, w), _conv(w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, pool = F.relu, lambda t: F.max_pool2d(t, 2, ceil_mode=True)
        e1 = r(self.enc1b(r(self.enc1a(x))))
        e2 = r(self.enc2b(r(self.enc2a(pool(e1)))))
        m = pool(e2)
        for conv in self.mid:
            m = r(conv(m))
        m = r(self.mid_out(m))
        d2 = r(self.dec2(F.interpolate(m, size=e2.shape[-2:], mode="nearest") + e2))
        d1 = r(self.dec1a(F.interpolate(d2, size=e1.shape[-2:], mode="nearest")))
        return self.head(r(self.dec1b(d1 + e1)))


class UNetLite(models.UNet):
    """The product's U-Net with its first decoder convolution (64 -> 32 channels) at half size,
    before the upsampling rather than after, so that it does a quarter of its arithmetic: on
    2 cores 1.3-1.5x the training steps a second in a bare loop, about 1.06x in the trainer
    (1,000 against 940 images/s, where the data and the noise take their share)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, pool = F.relu, lambda t: F.max_pool2d(t, 2, ceil_mode=True)
        e1 = r(self.enc1b(r(self.enc1a(x))))
        e2 = r(self.enc2b(r(self.enc2a(pool(e1)))))
        m = r(self.mid_b(r(self.mid_a(pool(e2)))))
        d2 = r(self.dec2(F.interpolate(m, size=e2.shape[-2:], mode="nearest") + e2))
        d1 = F.interpolate(r(self.dec1a(d2)), size=e1.shape[-2:], mode="nearest")
        return self.head(r(self.dec1b(d1 + e1)))


CANDIDATES = {"unet": lambda: models.UNet(32), "unet48": lambda: models.UNet(48), "unet3": UNet3,
              "unetmid": UNetMid, "unetlite": UNetLite}


def measure(candidate: str, *, epochs: int, precision: str, data_dir: str | None, loss: str = "bce",
            learning_rate: float | None = None, batch_size: int | None = None, device: str = "cpu") -> dict:
    mnist = load_dataset(data_dir)
    config = TrainConfig.recipe("unet", epochs=epochs, loss=loss, learning_rate=learning_rate,
                                batch_size=batch_size, max_minutes=0)  # quality: no time budget
    on = torch.device(device)
    chosen = resolve_precision(precision, on)
    built = training.build_model
    training.build_model = lambda name: CANDIDATES[candidate]()  # the trainer builds the candidate
    try:
        started = time.perf_counter()
        result = training.train(mnist.train_images, config, device=on, precision=chosen,
                                show_progress=False)
        seconds = time.perf_counter() - started
    finally:
        training.build_model = built
    noisy = noisy_copy(mnist.test_images, spec=NoiseSpec.parse("gaussian:0.5"), seed=0)
    clean = to_float(mnist.test_images)
    out = denoise(result.model, noisy, device=on)
    return {"candidate": candidate, "epochs": epochs, "loss": loss, "learning_rate": config.learning_rate,
            "batch_size": config.batch_size, "device": on.type, "precision": chosen.name,
            "parameters": models.count_parameters(result.model), "train_seconds": round(seconds, 1),
            "images_per_s": [round(e.images_per_second) for e in result.history],
            "val_psnr": [round(e.val_psnr, 3) for e in result.history],
            "test_psnr": float(psnr(clean, out).mean()), "test_ssim": float(ssim(clean, out).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", choices=sorted(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--loss", choices=("bce", "mse", "l1"), default="bce")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--device", default="cpu", help="cpu (the budget's machine) or cuda (a quick sweep)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", metavar="PATH", help="append the result as a JSON line here")
    args = parser.parse_args()
    result = measure(args.candidate, epochs=args.epochs, precision=args.precision, data_dir=args.data_dir,
                     loss=args.loss, learning_rate=args.lr, batch_size=args.batch_size, device=args.device)
    print(json.dumps(result))
    if args.json:
        with Path(args.json).open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
