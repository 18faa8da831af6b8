"""What lies on a page besides the digit: paper texture, a printed pattern beneath the ink,
pieces of neighbouring digits, uneven lighting. Each is drawn per image from one
``torch.Generator`` (:mod:`denoiser.noise.degrade` composes them into scans)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def paper_texture(shape: tuple[int, int, int], amplitude: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Zero-mean low-frequency texture: coarse random noise upsampled smoothly."""
    n, h, w = shape
    coarse = torch.randn(n, 1, max(2, h // 6), max(2, w // 6), generator=rng, device=rng.device)
    fine = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).squeeze(1)
    return amplitude * fine


def printed_pattern(shape: tuple[int, int, int], rng: torch.Generator) -> torch.Tensor:
    """(N, H, W) line work in [0, 1]: one or two families of thin wavy lines at a random
    angle, spacing and waviness (security backgrounds), and now and then a straight rule."""
    n, h, w = shape
    dev = rng.device
    ys = torch.arange(h, dtype=torch.float32, device=dev).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, w)
    out = torch.zeros(n, h, w, device=dev)
    for family in range(2):
        angle = math.pi * torch.rand(n, 1, 1, generator=rng, device=dev)
        spacing = 2.5 + 5 * torch.rand(n, 1, 1, generator=rng, device=dev)
        wave = 4 * torch.rand(n, 1, 1, generator=rng, device=dev)
        period = 10 + 30 * torch.rand(n, 1, 1, generator=rng, device=dev)
        phase = 2 * math.pi * torch.rand(n, 1, 2, generator=rng, device=dev)
        along = torch.cos(angle) * xs + torch.sin(angle) * ys
        across = -torch.sin(angle) * xs + torch.cos(angle) * ys
        position = (along + wave * torch.sin(2 * math.pi * across / period + phase[..., :1])) / spacing
        width = 0.15 + 0.2 * torch.rand(n, 1, 1, generator=rng, device=dev)  # the line's share of its period
        distance = (position - torch.floor(position) - 0.5).abs() * spacing  # pixels from a line's middle
        lines = (1 - (distance - width * spacing / 2).clamp(0, 1))
        use = (torch.rand(n, 1, 1, generator=rng, device=dev) < (1.0 if family == 0 else 0.4)).float()
        out = torch.maximum(out, lines * use)
    rule_row = (h * (0.6 + 0.35 * torch.rand(n, 1, 1, generator=rng, device=dev))).round()
    rule = ((ys - rule_row).abs() < 1).float() * (torch.rand(n, 1, 1, generator=rng, device=dev) < 0.3)
    return torch.maximum(out, rule)


def with_neighbours(digits: torch.Tensor, use: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(N, H, W) digits with, where ``use``, a piece of another digit of the batch shifted by
    18-24 pixels (at 1x) to the left or right, cut at the edge (no wrap round)."""
    n, h, w = digits.shape
    dev = digits.device
    others = digits[torch.randperm(n, generator=rng, device=rng.device).to(dev)]
    side = torch.where(torch.rand(n, generator=rng, device=rng.device) < 0.5, -1, 1).to(dev)
    offset = side * torch.randint(round(18 * w / 28), round(25 * w / 28), (n,), generator=rng,
                                  device=rng.device).to(dev)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    shifted = torch.stack([torch.roll(o, int(k), dims=-1) for o, k in zip(others, offset, strict=True)])
    keep = torch.where(offset.view(-1, 1, 1) > 0, cols >= offset.view(-1, 1, 1), cols < w + offset.view(-1, 1, 1))
    return torch.where(use.view(-1, 1, 1), torch.maximum(digits, shifted * keep), digits)


def lighting_field(shape: tuple[int, int, int], strength: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """A multiplicative illumination ramp in a random direction, 1 at the centre."""
    n, h, w = shape
    angle = 2 * math.pi * torch.rand(n, 1, 1, generator=rng, device=rng.device)
    ys = torch.linspace(-0.5, 0.5, h, device=rng.device).view(1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w, device=rng.device).view(1, 1, w)
    return 1 + strength * (torch.cos(angle) * xs + torch.sin(angle) * ys)
