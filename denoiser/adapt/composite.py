"""Training pairs made from a folder's own paper: known digits laid on the folder's backgrounds.

A folder of real scans has no clean copies, but its paper, printed pattern, rules, texture
and noise are all there, around the ink. The parent model's output of a scan says where its
ink is; with that ink (and a margin) taken out and the hole filled from the scan's own
background (:func:`fill`: copies of the pattern shifted by a third or a half of the scan, on
the paper's slow level at the hole),
each scan gives a background with the folder's real structure, whatever its correlation.
Known digits (MNIST's, brought to the folder's hand) are laid on such backgrounds as ink lies
on paper: reflectances multiply, so in the model's look (paper 0, ink towards 1) the
composite is ``b + d - b d`` and the ink hides the pattern beneath it; the truth is the
same digit on flat paper, ``d``, at the folder's own ink level. Half the composites get a
piece of a neighbouring digit at the left or right edge, kept in the truth too, as real
crops of written amounts have.

    found = Backgrounds.from_scans(inputs, outputs)   # the folder's scans and the parent's outputs
    noisy, clean = found.pairs(digits, rng)           # digits (N, 1, 28, 28), ink 1

Trained beside the composites: the folder's own scans with the parent's outputs as truth, on
and around their ink only (:func:`ink_anchors`). The composites' ink is MNIST's, laid down;
alone, they taught models to remove the folder's paper better and to handle its real ink
worse (on the cheques, 6.2 points fewer digits read right).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.noise.degrade import blur, blur_kernels
from denoiser.noise.paper import with_neighbours

INK = 0.2  # the parent's output above this (in the model's look) is ink
MARGIN = 2  # pixels around the ink also taken out (blur, a stroke's faint edge)
MIN_FREE = 0.3  # a scan gives a background only where this share of it is free of ink
CROP = 28
NEIGHBOUR = 0.5  # share of composites with a piece of a neighbouring digit at an edge
#: The digit's ink is scanned as the folder's was before it is laid down: blurred by up to
#: this sigma (pixels, in the model's look) and given the folder's noise, while the truth stays
#: sharp. Laid down sharp and clean, real ink (soft, grainy, JPEG-marked) taught the model to
#: copy ink as it is: 64.8% of the cheque digits read right against the parent's 70.7%.
INK_BLUR = (0.0, 1.2)


def ink_masks(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Where each output (the parent's, in the model's look) has ink, with a margin."""
    masks = []
    for out in outputs:
        t = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None, None] > INK
        grown = F.max_pool2d(t.float(), 2 * MARGIN + 1, stride=1, padding=MARGIN) > 0
        masks.append(grown[0, 0].numpy())
    return masks


def ink_anchors(parent: torch.nn.Module, scans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scans, truth, weight) on the CPU for ``scans`` (N, 1, 28, 28, in the model's look):
    the parent's outputs of them as truth, counted only on and around their ink (weight 1
    there, 0 elsewhere): trained beside the composites, they keep real ink as the parent
    cleans it while the composites teach the folder's paper."""
    with torch.no_grad():
        kept = torch.cat([torch.sigmoid(parent(scans[i : i + 256]).float()) for i in range(0, len(scans), 256)])
    weight = F.max_pool2d((kept > INK).float(), 2 * MARGIN + 1, stride=1, padding=MARGIN)
    return scans.cpu(), kept.cpu(), weight.cpu()


def slow_level(scan: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The plane (a + b y + c x) fitted by least squares to ``scan`` where ``keep``: the slow
    level of its paper, which uneven lighting tilts; a flat constant for any other paper."""
    h, w = scan.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = ys / max(h - 1, 1), xs / max(w - 1, 1)
    terms = np.stack([np.ones(int(keep.sum()), np.float32), ys[keep], xs[keep]], axis=1)
    if len(terms) < 3:
        return np.full(scan.shape, float(np.median(scan[keep])) if keep.any() else 0.0, np.float32)
    (a, b, c), *_ = np.linalg.lstsq(terms, scan[keep].astype(np.float32), rcond=None)
    return (a + b * ys + c * xs).astype(np.float32)


def fill(scan: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``scan`` with the pixels under ``hole`` replaced by the scan's own background: its
    pattern copied from positions shifted by a third or a half of its size (wrapping round),
    nearest shifts first in a random order, on the paper's slow level (:func:`slow_level`)
    at the hole, not at the copy's source; what no shift reaches gets the pattern's median.
    Copied with its level, a gradient of light made steps where the copies met, which the
    gate read as paper left unflat: uneven lighting's adapted model was refused (the held-out
    paper 23.07 -> 22.80 dB) while, against the truth, it left the scans' own paper 8 dB
    flatter than its parent; with the level, the gate reads 28.41 -> 31.51 dB (docs/LOG.md)."""
    level = slow_level(scan, ~hole)
    filled, left = scan.astype(np.float32) - level, hole.copy()
    h, w = scan.shape
    shifts = [(dy, dx) for fy, fx in ((0, 1), (1, 0), (1, 1), (1, -1)) for k in (2, 3)
              for sign in (1, -1) for dy, dx in [(sign * fy * (h // k), sign * fx * (w // k))]]
    order = rng.permutation(len(shifts))
    for _ in range(3):
        for i in order:
            dy, dx = shifts[i]
            if not left.any():
                break
            source, source_hole = np.roll(filled, (dy, dx), (0, 1)), np.roll(left, (dy, dx), (0, 1))
            take = left & ~source_hole
            filled[take] = source[take]
            left &= ~take
    if left.any():
        filled[left] = float(np.median(filled[~hole])) if (~hole).any() else 0.0
    out = np.clip(filled + level, 0.0, 1.0)
    out[~hole] = scan[~hole]  # exactly as scanned outside the hole
    return out


@dataclass
class Backgrounds:
    """A folder's backgrounds (its scans without their ink, in the model's look) and the
    folder's ink levels in that look."""

    images: list[np.ndarray]
    ink: np.ndarray  # the folder's ink level, one per scan that has ink
    noise: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))  # the folder's noise levels

    @classmethod
    def from_scans(cls, inputs: list[np.ndarray], outputs: list[np.ndarray], seed: int = 0) -> Backgrounds:
        """Backgrounds of the scans with enough paper free of ink; raises ValueError when
        none has (a folder of blank pages or of solid ink has nothing to learn from)."""
        rng = np.random.default_rng(seed)
        images, inks = [], []
        for scan, out, hole in zip(inputs, outputs, ink_masks(outputs), strict=True):
            strokes = out > 0.5
            if strokes.sum() >= 4:
                inks.append(float(np.median(scan[strokes])))
            if (~hole).mean() >= MIN_FREE:
                images.append(fill(scan, hole, rng))
        if not images:
            raise ValueError(f"none of the {len(inputs)} scans has {MIN_FREE:.0%} of its paper free of ink: "
                             "no background to learn from")
        ink = np.clip(np.asarray(inks if inks else [0.8], dtype=np.float32), 0.3, 1.0)
        return cls(images, ink)

    def split(self, share: float, seed: int = 0) -> tuple[Backgrounds, Backgrounds]:
        """(kept, held out): ``share`` of the backgrounds held out, never to be trained on."""
        order = np.random.default_rng(seed).permutation(len(self.images))
        held = max(1, round(len(order) * share)) if len(order) > 1 else 0
        pick = lambda idx: [self.images[i] for i in idx]  # noqa: E731
        return (replace(self, images=pick(order[held:]) or pick(order)),
                replace(self, images=pick(order[:held]) or pick(order)))

    def crops(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """(n, 1, 28, 28) random crops of random backgrounds (reflected where smaller)."""
        out = torch.empty(n, 1, CROP, CROP)
        picks = torch.randint(0, len(self.images), (n,), generator=rng).tolist()
        for k, i in enumerate(picks):
            image = torch.from_numpy(self.images[i])[None, None]
            h, w = image.shape[-2:]
            if h < CROP or w < CROP:
                pad_h, pad_w = max(0, CROP - h), max(0, CROP - w)
                image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                              mode="reflect" if min(h, w) > max(pad_h, pad_w) // 2 + 1 else "replicate")
                h, w = image.shape[-2:]
            top = int(torch.randint(0, h - CROP + 1, (1,), generator=rng))
            left = int(torch.randint(0, w - CROP + 1, (1,), generator=rng))
            flip = bool(torch.rand(1, generator=rng) < 0.5)
            crop = image[0, :, top:top + CROP, left:left + CROP]
            out[k] = crop.flip(-1) if flip else crop
        return out

    def pairs(self, digits: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) for ``digits`` (N, 1, 28, 28) with ink near 1: each at an ink level of
        the folder's, with a neighbour's piece at an edge for half of them, laid on a background."""
        n = len(digits)
        level = torch.from_numpy(self.ink)[torch.randint(0, len(self.ink), (n,), generator=rng)].view(-1, 1, 1, 1)
        ink = with_neighbours(digits.float().clamp(0, 1)[:, 0], torch.rand(n, generator=rng) < NEIGHBOUR,
                              rng)[:, None]
        clean = ink * level
        sigma = INK_BLUR[0] + (INK_BLUR[1] - INK_BLUR[0]) * torch.rand(n, 1, 1, generator=rng)
        kernels = blur_kernels(n, sigma.clamp_min(1e-3), torch.zeros(n, 1, 1, dtype=torch.bool), rng, 7)
        scanned = blur(ink[:, 0], kernels)[:, None] * level
        noise = torch.from_numpy(self.noise)[torch.randint(0, len(self.noise), (n,), generator=rng)].view(-1, 1, 1, 1)
        scanned = (scanned + noise * scanned.clamp(0, 1) * torch.randn(scanned.shape, generator=rng)).clamp(0, 1)
        background = self.crops(n, rng)
        return (background + scanned - background * scanned).clamp(0, 1), clean
