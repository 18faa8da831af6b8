"""Realistic scan degradations: what scanners, faxes and old forms do to a clean digit.

A :class:`Degradation` renders clean digits (float, bright strokes on black, in [0, 1]) as
*scans*: on paper of some tone with ink of some darkness, either polarity, at 1x to 4x
MNIST's scale; then corrupts them in a random order, as BSRGAN shuffles its degradations
and Real-ESRGAN applies them more than once:

==================  ===================================================================
tone                paper level and ink level (faded ink = low contrast), polarity
scale               resampled from 28 px to ``28 * scale`` px (bilinear)
pattern             a pattern printed on the paper beneath the ink (security line work,
                    guide lines and rules), which the ink hides
neighbours          a piece of another digit at the left or right edge, as crops of
                    written amounts and postcodes have (kept in the truth: it is ink)
texture             low-frequency paper texture added to the page
lighting            a linear illumination gradient multiplying the page
blur                defocus (Gaussian) or motion (a line kernel at a random angle)
noise               clipped Gaussian, Poisson-Gaussian sensor noise or speckle
dust                salt-and-pepper specks of ink or paper tone, 1-2 px
jpeg                JPEG at quality 30-95 (Pillow, on the CPU)
==================  ===================================================================

:func:`degrade` returns both the *clean scan* (tone and scale applied, nothing else: the
truth a cleaner should recover) and the degraded one. Each component is drawn per image
from the ranges of the :class:`Degradation`, with a probability; all randomness comes
from one ``torch.Generator`` (noise is drawn on its device; JPEG on the CPU).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from denoiser.noise.paper import lighting_field, paper_texture, printed_pattern, with_neighbours

Range = tuple[float, float]


@dataclass(frozen=True)
class Degradation:
    """Ranges (low, high) of each component and the probability that it is applied."""

    dark_ink: float = 0.5  # probability of dark ink on light paper (else light on dark)
    p_pure: float = 0.0  # probability of pure paper and full-contrast ink (MNIST's tones)
    paper: Range = (0.0, 0.35)  # distance of the paper from pure black/white
    contrast: Range = (0.15, 1.0)  # |ink - paper| as a fraction of the room the paper leaves
    scale: Range = (1.0, 1.0)  # resampling factor of the digit (one per batch)
    p_scale: float = 1.0  # probability that a batch is resampled at all (else scale 1)
    p_pattern: float = 0.0
    pattern: Range = (0.15, 0.5)  # the printed pattern's tone, as a share of the ink's contrast
    p_neighbour: float = 0.0
    p_texture: float = 0.3
    texture: Range = (0.0, 0.06)  # amplitude of the paper texture
    p_lighting: float = 0.3
    lighting: Range = (0.0, 1.0)  # relative illumination change across the page
    p_blur: float = 0.4
    p_motion: float = 0.3  # of the blurs, the share that are motion blur
    blur: Range = (0.3, 1.2)  # defocus sigma, px at 1x (x scale); motion length = 3 * sigma
    p_noise: float = 0.9
    noise_kinds: tuple[float, float, float] = (0.6, 0.25, 0.15)  # gaussian, poisson-gaussian, speckle
    noise: Range = (0.02, 0.6)  # std of the Gaussian part at full contrast (x contrast, >= 0.3)
    p_dust: float = 0.2
    dust: Range = (0.002, 0.04)  # fraction of pixels hit by a speck
    p_jpeg: float = 0.3
    jpeg: Range = (30.0, 95.0)
    p_second_noise: float = 0.15  # a second round of noise after blur or JPEG (high order)
    shuffle: bool = True  # blur, noise and lighting in a random order per batch

    def __post_init__(self) -> None:
        for name in ("paper", "contrast", "scale", "pattern", "texture", "lighting", "blur", "noise", "dust",
                     "jpeg"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high)) or high < low or low < 0:
                raise ValueError(f"degradation range {name}={low}-{high} must be finite, >= 0, low <= high")
        if not 1 <= self.scale[0] <= 4 or self.scale[1] > 4:
            raise ValueError(f"scale range must lie within 1-4, got {self.scale}")
        if self.paper[1] > 0.5 or self.contrast[1] > 1 or self.contrast[0] <= 0:
            raise ValueError("paper must be <= 0.5 from black/white and contrast in (0, 1]")
        if not 30 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise ValueError(f"JPEG quality range must lie within 30-100, got {self.jpeg}")

    def scaled(self, strength: float) -> Degradation:
        """The same mixture with noise, dust and blur ranges multiplied by ``strength``."""
        def times(r: Range) -> Range:
            return (r[0] * strength, r[1] * strength)
        return replace(self, noise=times(self.noise), dust=(min(self.dust[0] * strength, 1.0),
                       min(self.dust[1] * strength, 1.0)), blur=times(self.blur))


#: The training mixture behind ``--noise scan``: every component, in random order, at 1-4x
#: MNIST's scale; 40% of the pages in MNIST's pure tones (black or white paper,
#: full-contrast ink), where clipping shapes the noise most. Scans of 1.5x and more are
#: shrunk back before the model sees them, as the cleaner shrinks them
#: (:mod:`denoiser.scans.restore`), so the model never sees 4x strokes.
SCAN = Degradation(scale=(1.0, 4.0), p_scale=0.4, p_pure=0.4)


def _uniform(rng: torch.Generator, n: int, bounds: Range) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, 1, 1, generator=rng, device=rng.device)


def _chance(rng: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, 1, 1, generator=rng, device=rng.device) < p


def render_tone(digits: torch.Tensor, *, paper: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """Digits (N, H, W) in [0, 1] drawn with ``ink`` on ``paper`` (per-image (N, 1, 1) levels)."""
    return paper + (ink - paper) * digits


def resample(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Images (N, H, W) resampled by ``scale`` (bilinear; area averaging when shrinking)."""
    if scale == 1:
        return images
    size = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
    mode = "bilinear" if scale > 1 else "area"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(images.unsqueeze(1), size=size, mode=mode, **kwargs).squeeze(1).clamp(0, 1)


def blur_kernels(n: int, sigma: torch.Tensor, motion: torch.Tensor, rng: torch.Generator,
                 size: int) -> torch.Tensor:
    """(N, size, size) normalised kernels: Gaussian of ``sigma``, or a line of length 3 sigma."""
    r = torch.arange(size, device=rng.device, dtype=torch.float32) - size // 2
    yy, xx = r.view(1, size, 1), r.view(1, 1, size)
    gauss = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    angle = math.pi * torch.rand(n, 1, 1, generator=rng, device=rng.device)
    along = xx * torch.cos(angle) + yy * torch.sin(angle)
    across = -xx * torch.sin(angle) + yy * torch.cos(angle)
    length = 3 * sigma
    line = ((along.abs() <= length / 2) & (across.abs() <= 0.5)).float() + 1e-6 * gauss
    kernel = torch.where(motion, line, gauss)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each image convolved with its own kernel (reflect padding)."""
    n, h, w = images.shape
    k = kernels.shape[-1]
    padded = F.pad(images.unsqueeze(0), (k // 2,) * 4, mode="reflect")
    return F.conv2d(padded, kernels.unsqueeze(1), groups=n).view(n, h, w)


def add_noise(images: torch.Tensor, level: torch.Tensor, kinds: torch.Tensor,
              rng: torch.Generator) -> torch.Tensor:
    """Gaussian (kind 0), Poisson-Gaussian (1: variance ~ level^2 (0.2 + x)) or speckle (2)."""
    z = torch.randn(images.shape, generator=rng, device=rng.device)
    gaussian = level * z
    poisson_gaussian = level * torch.sqrt(0.2 + images.clamp(0, 1)) * z
    speckle = level * images * z
    noise = torch.where(kinds == 0, gaussian, torch.where(kinds == 1, poisson_gaussian, speckle))
    return images + noise


def add_dust(images: torch.Tensor, fraction: torch.Tensor, paper: torch.Tensor, ink: torch.Tensor,
             rng: torch.Generator) -> torch.Tensor:
    """Specks of 1-2 px in ink tone (mostly) or paper tone, covering about ``fraction``."""
    n, h, w = images.shape
    seeds = torch.rand(n, 1, h, w, generator=rng, device=rng.device) < fraction.unsqueeze(1) / 2
    grow = torch.rand(n, 1, 1, 1, generator=rng, device=rng.device) < 0.5  # 2x2 specks
    specks = torch.where(grow, F.max_pool2d(seeds.float(), 2, stride=1, padding=1)[..., :h, :w],
                         seeds.float()).squeeze(1) > 0
    dark = torch.rand(n, h, w, generator=rng, device=rng.device) < 0.7
    # Dust shows in the ink's tone on the page, and a few holes in the paper's tone.
    return torch.where(specks, torch.where(dark, ink.expand(n, h, w), paper.expand(n, h, w)), images)


def jpeg(images: torch.Tensor, quality: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """JPEG round trip (Pillow, 8-bit gray) of the images where ``apply`` is set."""
    if not bool(apply.any()):
        return images
    out = images.clone()
    cpu = images.clamp(0, 1).detach().cpu().numpy()
    for i in torch.nonzero(apply.flatten()).flatten().tolist():
        buffer = io.BytesIO()
        Image.fromarray(np.round(cpu[i] * 255).astype(np.uint8), mode="L").save(
            buffer, format="JPEG", quality=int(quality.flatten()[i]))
        decoded = np.asarray(Image.open(buffer), dtype=np.float32) / 255.0
        out[i] = torch.from_numpy(decoded).to(images.device)
    return out


def degrade(digits: torch.Tensor, spec: Degradation, *, rng: torch.Generator,
            scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clean_scan, degraded)`` (N, H', W') for clean digits (N, H, W), light on black.

    The batch shares one resampling factor (``scale``, or drawn from ``spec.scale``); every
    other parameter is drawn per image. Results are in [0, 1], on ``digits``' device.
    """
    device = digits.device
    x = digits.float().to(rng.device)
    n = x.shape[0]
    if scale is None:
        drawn = float(_uniform(rng, 1, spec.scale).item())
        scale = drawn if bool(_chance(rng, 1, spec.p_scale).item()) else 1.0
    if spec.p_neighbour > 0:
        x = with_neighbours(x, _chance(rng, n, spec.p_neighbour).view(-1), rng)
    x = resample(x, scale)
    shape = tuple(x.shape)

    # Tone: paper near white (dark ink) or near black (light ink), ink a fraction of the way.
    dark = _chance(rng, n, spec.dark_ink)
    pure = _chance(rng, n, spec.p_pure)
    offset = torch.where(pure, 0.0, _uniform(rng, n, spec.paper))
    paper = torch.where(dark, 1 - offset, offset)
    contrast = torch.where(pure, 1.0, _uniform(rng, n, spec.contrast)) * torch.where(dark, paper, 1 - paper)
    ink = torch.where(dark, paper - contrast, paper + contrast)
    clean = render_tone(x, paper=paper, ink=ink)

    # A pattern printed on the paper, lighter than the ink, which hides it where it lies.
    y = clean
    if spec.p_pattern > 0:
        tone = _uniform(rng, n, spec.pattern) * (ink - paper)
        y = y + torch.where(_chance(rng, n, spec.p_pattern), tone * printed_pattern(shape, rng) * (1 - x), 0)
    # Corruptions, in a random order (BSRGAN); a second noise round now and then (Real-ESRGAN).
    y = y + torch.where(_chance(rng, n, spec.p_texture),
                            paper_texture(shape, _uniform(rng, n, spec.texture), rng), 0)
    sigma = _uniform(rng, n, spec.blur) * scale
    size = 2 * math.ceil(2 * float(sigma.max()) * 1.5) + 1
    kernels = blur_kernels(n, sigma, _chance(rng, n, spec.p_motion), rng, min(size, 31))
    use_blur = _chance(rng, n, spec.p_blur)
    use_light = _chance(rng, n, spec.p_lighting)
    light = lighting_field(shape, _uniform(rng, n, spec.lighting), rng)
    use_noise = _chance(rng, n, spec.p_noise)
    # Noise scales with the ink's contrast (floored at 0.3): faint ink under noise as
    # strong as the tutorial's is illegible on any real page, and teaches only guessing.
    level = _uniform(rng, n, spec.noise) * contrast.abs().clamp(min=0.3)
    probs = torch.tensor(spec.noise_kinds, dtype=torch.float32, device=rng.device)
    kinds = torch.multinomial(probs, n, replacement=True, generator=rng).view(n, 1, 1)
    steps = ["blur", "noise", "light"]
    if spec.shuffle:
        steps = [steps[i] for i in torch.randperm(3, generator=torch.Generator().manual_seed(
            int(torch.randint(0, 2**31, (1,), generator=rng, device=rng.device))))]
    for step in steps:
        if step == "blur":
            y = torch.where(use_blur, blur(y, kernels), y)
        elif step == "light":
            y = torch.where(use_light, y * light, y)
        else:
            y = torch.where(use_noise, add_noise(y, level, kinds, rng), y)
    y = add_dust(y.clamp(0, 1), torch.where(_chance(rng, n, spec.p_dust), _uniform(rng, n, spec.dust), 0.0),
                 paper, ink, rng)
    y = jpeg(y, _uniform(rng, n, spec.jpeg), _chance(rng, n, spec.p_jpeg))
    second = _chance(rng, n, spec.p_second_noise)
    y = torch.where(second, add_noise(y, level / 2, kinds, rng), y)
    return clean.clamp(0, 1).to(device), y.clamp(0, 1).to(device)
