"""The networks: a small U-Net (the default), the tutorial's conv DAE and its dense baselines.

Every model maps float32 images ``(N, 1, H, W)`` in [0, 1] to *logits* of the same shape;
``torch.sigmoid`` of the logits is the reconstructed image. Models know nothing about
noise or loss: those live in :mod:`denoiser.noise.synthetic` and :mod:`denoiser.training.loop`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from denoiser.models.recipe import MODEL_NAMES


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    # 3x3, stride 1, 'same' padding, as tf.layers.conv2d(..., padding='same') in the tutorial.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class ConvDAE(nn.Module):
    """The tutorial's conv DAE: 121,281 parameters, bottleneck 32x4x4 for a 28x28 input.

    Encoder: conv 64 -> pool -> conv 64 -> pool -> conv 32 -> pool (28 -> 14 -> 7 -> 4,
    pooling with 'same' padding, i.e. ceil mode). Decoder: nearest upsample to 7, 14, 28,
    each followed by conv 32, 64, 64; a final 3x3 conv to one channel of logits.

    The network is fully convolutional: for other sizes the decoder upsamples back to the
    encoder's feature sizes, so any H x W comes back as H x W.
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _conv(1, 64)
        self.enc2 = _conv(64, 64)
        self.enc3 = _conv(64, 32)
        self.dec1 = _conv(32, 32)
        self.dec2 = _conv(32, 64)
        self.dec3 = _conv(64, 64)
        self.head = _conv(64, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each conv+pool; the last one is the bottleneck."""
        h1 = F.max_pool2d(F.relu(self.enc1(x)), 2, ceil_mode=True)
        h2 = F.max_pool2d(F.relu(self.enc2(h1)), 2, ceil_mode=True)
        h3 = F.max_pool2d(F.relu(self.enc3(h2)), 2, ceil_mode=True)
        return [h1, h2, h3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1, h2, code = self.encode(x)
        y = F.relu(self.dec1(F.interpolate(code, size=h2.shape[-2:], mode="nearest")))
        y = F.relu(self.dec2(F.interpolate(y, size=h1.shape[-2:], mode="nearest")))
        y = F.relu(self.dec3(F.interpolate(y, size=x.shape[-2:], mode="nearest")))
        return self.head(y)


class UNet(nn.Module):
    """A small U-Net: the tutorial's two poolings, but with skip connections and a wider middle.

    Encoder: conv ``w`` x2 at full size, pool, conv ``2w`` x2, pool, conv ``2w`` x2 at a
    quarter size. Decoder: nearest upsample, *add* the encoder's feature map of that size
    (additive skips cost no extra convolution width), conv; a 3x3 conv to one channel of
    logits. Fine detail reaches the output through the skips instead of a 4x4 bottleneck,
    which is what limits the tutorial's model. Fully convolutional, like :class:`ConvDAE`.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w, w2 = width, 2 * width
        self.enc1a, self.enc1b = _conv(1, w), _conv(w, w)
        self.enc2a, self.enc2b = _conv(w, w2), _conv(w2, w2)
        self.mid_a, self.mid_b = _conv(w2, w2), _conv(w2, w2)
        self.dec2 = _conv(w2, w2)
        self.dec1a, self.dec1b = _conv(w2, w), _conv(w, w)
        self.head = _conv(w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = F.relu(self.enc1b(F.relu(self.enc1a(x))))
        e2 = F.relu(self.enc2b(F.relu(self.enc2a(F.max_pool2d(e1, 2, ceil_mode=True)))))
        m = F.relu(self.mid_b(F.relu(self.mid_a(F.max_pool2d(e2, 2, ceil_mode=True)))))
        d2 = F.relu(self.dec2(F.interpolate(m, size=e2.shape[-2:], mode="nearest") + e2))
        d1 = F.relu(self.dec1a(F.interpolate(d2, size=e1.shape[-2:], mode="nearest")))
        d1 = F.relu(self.dec1b(d1 + e1))
        return self.head(d1)


class DenseAE(nn.Module):
    """The tutorial's dense baselines: 784 -> hidden (ReLU) -> 784 logits, on 28x28 images."""

    def __init__(self, hidden: int, side: int = 28) -> None:
        super().__init__()
        self.side = side
        self.encoder = nn.Linear(side * side, hidden)
        self.decoder = nn.Linear(hidden, side * side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.side, self.side):
            raise ValueError(
                f"dense models take {self.side}x{self.side} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; use the 'conv' model for other sizes"
            )
        code = F.relu(self.encoder(x.flatten(1)))
        return self.decoder(code).view_as(x)


def build_model(name: str) -> nn.Module:
    """A fresh model by name: 'unet', 'conv', 'dense-ae' (64 units) or 'dense-dae' (32)."""
    if name == "unet":
        return UNet()
    if name == "conv":
        return ConvDAE()
    if name == "dense-ae":
        return DenseAE(hidden=64)
    if name == "dense-dae":
        return DenseAE(hidden=32)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
