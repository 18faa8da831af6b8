"""Paper and ink levels of a scan, and the map between a scan's tones and the model's.

The models see MNIST's look: paper 0, ink 1. A real scan has grey or white paper, faded or
dark ink, either polarity. :func:`estimate_levels` finds each image's paper and ink levels
robustly (medians, which symmetric noise and clipping leave in place), :func:`to_model`
maps the scan so that paper -> 0 and ink -> 1 (which also flips dark-on-light scans), and
:func:`from_model` maps a model output back to the scan's own tones.

    paper, ink = estimate_levels(images)        # (N, 1, 1) each
    y = model(to_model(images, paper, ink))     # MNIST's look
    cleaned = from_model(y, paper, ink)          # the scan's paper and ink again
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

#: The smallest |ink - paper| assumed: below it a page is taken as blank, not amplified.
MIN_CONTRAST = 0.04
#: Ink is placed this much further from the paper than measured, so that the model maps
#: the measured ink to 1 / HEADROOM = 0.8: strokes darker than measured (thin strokes,
#: blurred ones) keep their contrast instead of being clipped.
HEADROOM = 1.25
MAX_PIXELS = 1 << 16  # levels are estimated on at most this many pixels (a regular subsample)


def _subsample(images: torch.Tensor, max_pixels: int) -> torch.Tensor:
    n, h, w = images.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    return images[:, ::step, ::step] if step > 1 else images


def estimate_levels(images: torch.Tensor | np.ndarray, *, headroom: float = HEADROOM,
                    max_pixels: int = MAX_PIXELS,
                    dark_ink: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(paper, ink)`` levels, each shaped (N, 1, 1), of (N, H, W) images in [0, 1].

    The ink side is the tail of a 3x3-smoothed copy that reaches further from the median
    (smoothing keeps strokes and damps noise, so faded ink on grey paper is still found)
    and holds more of the deviations beyond the noise, in the scan's middle (:func:`_polarity`).
    Paper is the median of the raw pixels away from the strokes, ink the upper quartile of
    the raw pixels in the strokes' cores (more than 70% of the way to that tail's extreme),
    moved out by ``headroom`` (default :data:`HEADROOM`). Medians and quartiles of many pixels stay in place
    under symmetric noise, and under clipping at 0 or 1 (clipped Gaussian noise on black
    paper averages 0.2 but its median is 0). ``dark_ink`` (N booleans), where given, sets
    the polarity instead.
    """
    x = torch.as_tensor(images).float()
    if x.dim() != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {tuple(x.shape)}")
    # Smoothed at full resolution, then both read on a regular grid of at most max_pixels.
    smooth = _subsample(F.avg_pool2d(x.unsqueeze(1), 3, stride=1, padding=1,
                                     count_include_pad=False).squeeze(1), max_pixels)
    x = _subsample(x, max_pixels)
    n = x.shape[0]
    first_guess = x.reshape(n, -1).median(dim=1).values.view(n, 1, 1)
    dev = (smooth - first_guess).reshape(n, -1)
    high = torch.quantile(dev, 0.995, dim=1).view(n, 1, 1)
    low = torch.quantile(dev, 0.005, dim=1).view(n, 1, 1)
    sign = _polarity(dev.view_as(x))
    if dark_ink is not None:
        sign = torch.where(torch.as_tensor(dark_ink, dtype=torch.bool).view(n, 1, 1), -1.0, 1.0)
    toward_ink = sign * dev.view_as(x)
    reach = torch.where(sign > 0, high, -low)
    paper = _masked_quantile(x, toward_ink < 0.25 * reach, 0.5)
    paper = torch.where(torch.isnan(paper), first_guess, paper)
    ink = _masked_quantile(x, toward_ink > 0.7 * reach, 0.75)
    contrast = torch.clamp(torch.nan_to_num(sign * (ink - paper), nan=0.0), min=MIN_CONTRAST)
    return paper, paper + sign * contrast * headroom


#: The polarity is read away from this share of each side: a crop's edges hold what is not
#: the digit (a band of white paper beyond a printed field, a rule, a neighbour's piece).
POLARITY_BORDER = 0.15


def _polarity(dev: torch.Tensor) -> torch.Tensor:
    """+1 (light ink) or -1 (dark ink) for each of (N, H, W) smoothed deviations from the
    paper: light only where both the tail's reach and the mass beyond the noise say so,
    read in the scan's middle. The reach alone is fooled by a light printed pattern on grey
    paper that reaches as far as the dark ink on it (a cheque's guilloche), the mass alone
    by the area of a light band; documents are dark ink on light paper, so a split vote goes
    that way."""
    n, h, w = dev.shape
    bh, bw = int(h * POLARITY_BORDER), int(w * POLARITY_BORDER)
    mid = dev[:, bh:h - bh, bw:w - bw].reshape(n, -1)
    high, low = torch.quantile(mid, 0.995, dim=1), torch.quantile(mid, 0.005, dim=1)
    noise = 2 * 1.4826 * (mid - mid.median(dim=1, keepdim=True).values).abs().median(dim=1, keepdim=True).values
    light_mass = (mid - noise).clamp(min=0).sum(dim=1)
    dark_mass = (-mid - noise).clamp(min=0).sum(dim=1)
    return torch.where((high >= -low) & (light_mass >= dark_mass), 1.0, -1.0).view(n, 1, 1)


def _masked_quantile(x: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    n = x.shape[0]
    return torch.nanquantile(torch.where(mask, x, torch.nan).reshape(n, -1), q, dim=1).view(n, 1, 1)


def to_model(images: torch.Tensor, paper: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """(N, H, W) scans -> MNIST's look (paper 0, ink 1), clipped to [0, 1]."""
    return ((images - paper) / (ink - paper)).clamp_(0, 1)


def from_model(output: torch.Tensor, paper: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """Model outputs (paper 0, ink 1) -> the scan's own paper and ink levels."""
    return ((ink - paper) * output).add_(paper).clamp_(0, 1)


def normalized(output: torch.Tensor, paper: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """Model outputs at full contrast in the scan's polarity: pure paper, full-contrast ink."""
    dark_ink = ink < paper
    return torch.where(dark_ink, 1 - output, output)
