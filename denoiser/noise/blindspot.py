"""Self-supervised denoising from noisy images alone: blind-spot masking (Noise2Void, with
N2V2's median replacement) and a loss that allows for clipped noise.

A network that cannot see a pixel's own value can only predict it from its neighbours;
noise independent between pixels then cannot be predicted, so the best such prediction is
the expected noisy value given the context. :func:`mask_batch` hides a random few pixels
(each replaced by the median of the ring around it, never by itself) and the loss compares
the output there with the noisy value.

Clipped noise is not zero-mean: on black paper, ``clip(0 + 0.5 z, 0, 1)`` averages 0.2, so
plain masking learns a grey background. The model here outputs the *clean* image ``x``
(as it was trained), and the loss compares the noisy pixels with what clipped Gaussian
noise of the folder's level ``sigma`` makes of ``x`` on average,
:func:`expected_clipped` ``(x, sigma)``: the output stays an estimate of the clean image.

Noise correlated between neighbours (blur, JPEG) leaks the hidden value through them; a
``radius`` of 1 hides the 3x3 block around each chosen pixel (structured masking) and
replaces it from the ring outside.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

#: Share of pixels hidden per image: enough loss pixels per step, few enough that the
#: context stays intact (N2V uses 0.2-2%; measured on MNIST-sized images).
MASK_FRACTION = 0.03


def mask_batch(images: torch.Tensor, *, rng: torch.Generator, fraction: float = MASK_FRACTION,
               radius: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked, chosen)``: (N, 1, H, W) ``images`` with a random ``fraction`` of pixels (and
    their ``radius`` neighbourhood) replaced by the median of the ring just outside, and the
    boolean map of the chosen pixels (the ones the loss scores)."""
    n, _, h, w = images.shape
    chosen = torch.rand((n, 1, h, w), generator=rng, device=rng.device).to(images.device) < fraction
    hidden = chosen if radius == 0 else F.max_pool2d(chosen.float(), 2 * radius + 1, 1, radius) > 0
    size = 2 * radius + 3  # the block and the ring of width 1 around it
    patches = F.unfold(F.pad(images, [radius + 1] * 4, mode="reflect"), size)  # (N, size^2, H*W)
    grid = torch.ones(size, size, dtype=torch.bool)
    grid[1:-1, 1:-1] = False  # the ring only: the hidden block never feeds itself
    ring = patches[:, grid.flatten().to(images.device)]
    replacement = ring.median(dim=1).values.view(n, 1, h, w)
    return torch.where(hidden, replacement, images), chosen


def clipped_moments(x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``clip(x + sigma z, 0, 1)`` for standard normal ``z``: what a
    noisy pixel of clean value ``x`` averages, and how far it strays. Differentiable in ``x``."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).clamp_min(1e-4)
    a, b = -x / sigma, (1 - x) / sigma
    cdf_a, cdf_b = (0.5 * (1 + torch.erf(t / math.sqrt(2))) for t in (a, b))
    pdf_a, pdf_b = (torch.exp(-t * t / 2) / math.sqrt(2 * math.pi) for t in (a, b))
    inside = cdf_b - cdf_a
    mean = (1 - cdf_b) + x * inside + sigma * (pdf_a - pdf_b)
    second = ((1 - cdf_b) + x * x * inside + 2 * x * sigma * (pdf_a - pdf_b)
              + sigma * sigma * (inside + a * pdf_a - b * pdf_b))
    return mean, (second - mean * mean).clamp_min(0)


def expected_clipped(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``E[clip(x + sigma z, 0, 1)]``; equals ``x`` as ``sigma`` goes to 0."""
    return clipped_moments(x, sigma)[0]


def blind_spot_loss(model: torch.nn.Module, noisy: torch.Tensor, sigma: torch.Tensor, *,
                    rng: torch.Generator, fraction: float = MASK_FRACTION, radius: int = 0) -> torch.Tensor:
    """Mean squared error, over the hidden pixels, between the noisy values and what the
    model's clean estimate averages under clipped noise of level ``sigma`` (per image,
    shaped (N, 1, 1, 1))."""
    masked, chosen = mask_batch(noisy, rng=rng, fraction=fraction, radius=radius)
    clean = torch.sigmoid(model(masked))
    expected = expected_clipped(clean, sigma)
    return ((expected - noisy) ** 2)[chosen].mean()


def clipped_noise_level(noisy: np.ndarray, clean_estimate: np.ndarray) -> float:
    """The level ``sigma`` of clipped Gaussian noise in images (N, H, W) in [0, 1], measured
    on their background (pixels whose clean estimate is below 0.05): there half the noise
    is clipped to 0, and the other half is ``|sigma z|``, whose median is 0.6745 sigma. The
    median ignores the few pixels that also clip at 1 (7% of them at sigma 0.7)."""
    paper, lifted = _lifted_paper(noisy, clean_estimate)
    if lifted.size < NOISE_PIXELS or lifted.size < CLEAN_SHARE * paper:
        return 0.0  # clean paper, or too little of it to measure (:func:`noise_measured` tells which)
    return float(np.median(lifted) / 0.6745)


NOISE_PIXELS = 100  # lifted paper pixels :func:`clipped_noise_level` needs to measure a level
CLEAN_SHARE = 0.05  # paper with fewer of its pixels lifted than this share is clean


def _lifted_paper(noisy: np.ndarray, clean_estimate: np.ndarray) -> tuple[int, np.ndarray]:
    """(the paper's pixel count, its pixels lifted above 0): the paper is where the clean
    estimate is below 0.05."""
    background = noisy[clean_estimate < 0.05]
    return background.size, background[background > 1 / 255]


def noise_measured(noisy: np.ndarray, clean_estimate: np.ndarray) -> bool:
    """Whether :func:`clipped_noise_level` of this image measured its noise (or found its paper
    clean), rather than returning 0.0 for want of paper: a scan mostly ink, or a tiny one."""
    paper, lifted = _lifted_paper(noisy, clean_estimate)
    return lifted.size >= NOISE_PIXELS or (paper >= NOISE_PIXELS and lifted.size < CLEAN_SHARE * paper)


def residual_correlation(noisy: np.ndarray, clean_estimate: np.ndarray) -> float:
    """How alike neighbouring pixels of the noise are: the correlation of the residual
    (``noisy - clean_estimate``) with itself one pixel across or down, on the background
    (clean estimate below 0.15). About 0 for white noise (measured: -0.02 to 0.04 for 90% of
    scans with Gaussian noise of 0.2-0.7); up to 1 where the residual is blur, JPEG's blocks,
    dust or uneven lighting, which a level of white noise does not describe. 0.0 when the
    background is too small or flat to say."""
    paper = clean_estimate < 0.15
    residual = noisy - clean_estimate
    if paper.sum() < 50:
        return 0.0
    centred = np.where(paper, residual - residual[paper].mean(), 0.0)
    variance = float(centred[paper].var())
    if variance < 1e-8:
        return 0.0
    across = paper[:, 1:] & paper[:, :-1]
    down = paper[1:, :] & paper[:-1, :]
    pairs = int(across.sum() + down.sum())
    if pairs < 50:
        return 0.0
    products = ((centred[:, 1:] * centred[:, :-1])[across].sum()
                + (centred[1:, :] * centred[:-1, :])[down].sum())
    return float(products / pairs / variance)
