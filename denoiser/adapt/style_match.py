"""Bringing MNIST's digits towards a folder's handwriting: slant, size and stroke width.

Adapting (:mod:`denoiser.adapt.fine_tune`) trains on clean MNIST digits given a folder's noise. Where
the folder's handwriting differs from MNIST's (a broader pen, more slant, larger digits), the
model learns shapes the folder does not have. The folder's shapes are known only through a
cleaner (the model's outputs of its scans, sharpened: :func:`folder_shapes`),
so each quantity is measured the same way on both sides: on the folder's shapes, and on
MNIST digits given the folder's noise and cleaned by the same model. At each quantile, the
difference between the two is what the folder's handwriting adds, and a training digit at
that quantile of MNIST (measured clean) is changed by that much. A folder in MNIST's style
gives differences near zero, and its digits stay almost as they are.

    match = StyleMatch.fit(pool, reference_seen, folder_seen)  # reference_seen: pool[:1000] cleaned
    batch = match.digits[index]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

QUANTILES = np.linspace(0.0, 1.0, 101)
#: How far a digit is changed at most: shear (x pixels per row), size ratio, stroke width (pixels).
LIMITS = ((-0.6, 0.6), (0.6, 1.6), (-2.0, 2.0))
CHUNK = 4096
ROUNDS = 2
#: Changes smaller than these are not made (shear, size ratio, width): resampling a digit
#: blurs it a little, and a folder in MNIST's style measures small changes that are noise.
DEAD_ZONE = (0.05, 0.05, 0.3)


def folder_shapes(parent: torch.nn.Module, scans: torch.Tensor, headroom: float) -> torch.Tensor:
    """(N, 1, H, W) stand-ins for the clean digits of a folder's scans (in the model's look):
    the parent's outputs, each brought to full ink and sharpened to a pen's edge, then at the
    look's ink level (1 / ``headroom``). They carry the folder's handwriting (stroke width,
    slant, size) that MNIST's digits lack."""
    with torch.no_grad():
        out = torch.cat([torch.sigmoid(parent(scans[i : i + 256]).float())
                         for i in range(0, len(scans), 256)])
    out = out / out.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return ((out - 0.5) * 3 + 0.5).clamp(0, 1) / headroom


#: The share of the fine-tuning budget that making the folder's shapes again may take: on a
#: short budget (or a slow machine) fewer refreshes are made, so that the budget is spent
#: training (a 1.2 s budget spent 4-5 s on one refresh, 2 cores).
REFRESH_SHARE = 0.2


def refreshes_within(budget: float, seconds_each: float, wanted: int) -> int:
    """How many of ``wanted`` refreshes of the folder's shapes, ``seconds_each`` seconds each,
    fit in :data:`REFRESH_SHARE` of a ``budget``-second fine-tuning."""
    if seconds_each <= 0:
        return wanted
    return max(0, min(wanted, int(REFRESH_SHARE * budget / seconds_each)))


def measure(images: torch.Tensor) -> np.ndarray:
    """(N, 3) of (N, 1, H, W) ink images: slant (columns moved per row down, about the ink's
    centre), height (the ink's standard deviation down the rows, in pixels, at least 0.001: a
    blank image has none) and stroke width (in pixels: the width of the rectangle with the
    ink's area A and the length P of its edges, their total variation: w = P / 4 -
    sqrt(P^2 / 16 - A); for a blob, P / 4)."""
    rows = []
    for start in range(0, len(images), CHUNK):
        x = images[start : start + CHUNK, 0].float()
        h, w = x.shape[-2:]
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
        mass = x.sum((1, 2)).clamp_min(1e-6)
        cy = (x * ys).sum((1, 2)) / mass
        cx = (x * xs).sum((1, 2)) / mass
        dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
        var_y = (x * dy * dy).sum((1, 2)) / mass
        slant = (x * dy * dx).sum((1, 2)) / mass / var_y.clamp_min(1e-6)
        grad = torch.sqrt((x[:, 1:, :-1] - x[:, :-1, :-1]) ** 2 + (x[:, :-1, 1:] - x[:, :-1, :-1]) ** 2)
        quarter = grad.sum((1, 2)) / 4
        width = quarter - torch.sqrt((quarter * quarter - mass).clamp_min(0))
        rows.append(torch.stack([slant, var_y.clamp_min(1e-6).sqrt(), width], 1))
    return torch.cat(rows).numpy().astype(np.float64)


@dataclass
class StyleMatch:
    """Training digits brought to a folder's handwriting (``digits``, (N, 1, H, W)) and the
    shear, size ratio and change of stroke width each was given (``changes``, (N, 3))."""

    digits: torch.Tensor
    changes: np.ndarray

    @classmethod
    def fit(cls, train: torch.Tensor, reference_seen: torch.Tensor, folder_seen: torch.Tensor,
            rounds: int = ROUNDS) -> StyleMatch:
        """``train``: the clean MNIST digits to be changed; ``reference_seen``: a random share
        of them as the cleaner gives them back from the folder's noise; ``folder_seen``: the
        folder's shapes as the same cleaner gives them (all (N, 1, H, W)). Each digit keeps
        its rank among ``train``. Shearing, resizing and widening each move the others'
        measures a little (a wider stroke is a taller, less slanted digit), so ``rounds``
        rounds correct what the changed digits still miss."""
        seen_q, folder_q = (np.quantile(measure(x), QUANTILES, axis=0) for x in (reference_seen, folder_seen))
        own = measure(train)
        target = np.empty_like(own)
        for k in range(3):
            u = (np.argsort(np.argsort(own[:, k])) + 0.5) / len(own)
            there, here = np.interp(u, QUANTILES, folder_q[:, k]), np.interp(u, QUANTILES, seen_q[:, k])
            target[:, k] = own[:, k] * there / here if k == 1 else own[:, k] + there - here
        changes = np.stack([target[:, 0] - own[:, 0], target[:, 1] / own[:, 1],
                            target[:, 2] - own[:, 2] * target[:, 1] / own[:, 1]], 1)
        low, high = np.array(LIMITS).T
        changes = np.clip(changes, low, high).astype(np.float32)
        digits = restyle(train, torch.from_numpy(changes))
        for _ in range(rounds):
            got = measure(digits)
            changes += np.stack([target[:, 0] - got[:, 0], changes[:, 1] * (target[:, 1] / got[:, 1] - 1),
                                 target[:, 2] - got[:, 2]], 1).astype(np.float32)
            changes = np.clip(changes, low, high)
            digits = restyle(train, torch.from_numpy(changes))
        small = np.abs(changes - [0.0, 1.0, 0.0]) < DEAD_ZONE
        changes[small[:, 0] & small[:, 1], :2] = [0.0, 1.0]  # no resampling, which blurs a little
        changes[small[:, 2], 2] = 0.0
        return cls(restyle(train, torch.from_numpy(changes)), changes)

    @property
    def changed_share(self) -> float:
        """The share of the digits that are changed at all."""
        return float((self.changes != [0.0, 1.0, 0.0]).any(axis=1).mean())

    def summary(self) -> dict[str, float]:
        """The median change of each quantity and the share changed (what the log shows)."""
        shear, ratio, widen = np.median(self.changes, axis=0)
        return {"shear": round(float(shear), 3), "size": round(float(ratio), 3),
                "width_px": round(float(widen), 2), "changed": round(self.changed_share, 3)}


def restyle(images: torch.Tensor, changes: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) digits sheared, resized about the centre and their strokes widened or
    narrowed, one (shear, ratio, widen) row of ``changes`` each (``widen`` in the pixels of
    the result); a digit with no change is returned exactly as it was.

    As a pen and a scanner would: the strokes are widened at the digit's own size (by
    ``widen / ratio`` pixels), then the whole digit is sheared and resized, which softens
    the widened edges as a scan's resampling does. Widening after the resizing instead drew
    crisp whole-pixel edges no scan has: on a broad, leaning, smaller hand (bench.adapt,
    2.5 min, bf16, same hour) adapting reached 21.77 dB this way against 21.50 (supervised
    22.06), and the first handwriting set 20.50 against 20.52.
    """
    out = images.clone()
    for start in range(0, len(images), CHUNK):
        part = slice(start, start + CHUNK)
        shear, ratio, widen = changes[part].T
        # Whole pixels only, so that edges stay a pen's: a 2x2 max (min) widens (narrows) by
        # one pixel, a 3x3 by two; a blend of them would draw a grey halo.
        drawn = images[part]
        step = (widen / ratio).round().clamp(-2, 2).view(-1, 1, 1, 1)
        x = drawn
        for k, width in ((2, 1), (3, 2)):
            x = torch.where(step == width, _grow(drawn, k), torch.where(step == -width, -_grow(-drawn, k), x))
        moved = torch.nonzero((shear != 0) | (ratio != 1))[:, 0]
        if len(moved):
            k, d = ratio[moved], shear[moved]
            theta = torch.zeros(len(moved), 2, 3)  # output -> input coordinates (square images)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = 1 / k, -d / k, 1 / k
            grid = F.affine_grid(theta, [len(moved), *images.shape[1:]], align_corners=False)
            x = x.clone()
            x[moved] = F.grid_sample(x[moved], grid, align_corners=False, padding_mode="zeros")
        out[part] = x
    return out


def _grow(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k x k (2 or 3) maximum around each pixel, same size."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 1) if k == 2 else F.max_pool2d(x, 3, 1, 1)
