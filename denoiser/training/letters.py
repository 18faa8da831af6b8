"""Letters drawn by a pen, for the digit-shape model's "not a digit" (:mod:`denoiser.training.shapes`).

Each letter is a skeleton of pen strokes written out below (a box with x from 0 at the
left to 1 at the right and y from 0 at the top to 1 at the baseline; lower case letters
start at the x-height 0.4, descenders reach 1.35). Drawing one jitters every point, bends
its proportions and draws the strokes with a pen of random width, so that no two are the
same and none is any font's: the letters a user's folder may hold are handwritten or
typed in fonts we never see.

Letters that are a digit's shape are left out: O and o (0), I, l, i and j (1), Z and z (2),
S and s (5). Those a hand may write much like one (B, D, G, Q, b, g, q) are drawn with what
tells them apart (a straight back, a tail, a bar, a stem).

    images = pen_letters(1000, np.random.default_rng(0))   # (1000, 28, 28) float32, ink 1 on 0
"""

from __future__ import annotations

import numpy as np

Stroke = list[tuple[float, float]]
SIDE = 28


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 10) -> Stroke:
    """Points along an ellipse's arc from angle ``start`` to ``end`` (degrees; 0 at the right,
    90 at the top)."""
    angles = np.radians(np.linspace(start, end, steps))
    return [(cx + rx * float(np.cos(a)), cy - ry * float(np.sin(a))) for a in angles]


BOWL = arc(0.45, 0.7, 0.45, 0.3, 0, 360, 16)  # the round part of a, d, e, p at the x-height
UPPER: dict[str, list[Stroke]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    "C": [arc(0.55, 0.5, 0.5, 0.5, 50, 310, 14)],
    "E": [[(0.9, 0), (0, 0), (0, 1), (0.9, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(0.9, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(0.9, 0), (0.9, 1)], [(0, 0.5), (0.9, 0.5)]],
    "J": [[(0.3, 0), (0.9, 0)], [(0.7, 0)] + arc(0.4, 0.7, 0.3, 0.3, 0, -180)],
    "K": [[(0, 0), (0, 1)], [(0.9, 0), (0, 0.6)], [(0.3, 0.4), (0.9, 1)]],
    "L": [[(0, 0), (0, 1), (0.8, 1)]],
    "M": [[(0, 1), (0.05, 0), (0.5, 0.65), (0.95, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (0.9, 1), (0.9, 0)]],
    "P": [[(0, 1), (0, 0), (0.5, 0)] + arc(0.5, 0.27, 0.35, 0.27, 90, -90) + [(0, 0.54)]],
    "R": [[(0, 1), (0, 0), (0.5, 0)] + arc(0.5, 0.27, 0.35, 0.27, 90, -90) + [(0, 0.54)], [(0.35, 0.54), (0.9, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "U": [[(0, 0)] + arc(0.45, 0.6, 0.45, 0.4, 180, 360) + [(0.9, 0)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (0.9, 1)], [(0.9, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
}
LOWER: dict[str, list[Stroke]] = {
    "a": [arc(0.45, 0.7, 0.4, 0.3, 80, 440, 16), [(0.85, 0.4), (0.85, 1)]],
    "a, printed": [arc(0.45, 0.55, 0.35, 0.15, 150, 0, 6) + [(0.8, 1)], arc(0.45, 0.8, 0.4, 0.2, 60, 330, 10)],
    "c": [arc(0.5, 0.7, 0.45, 0.3, 50, 310, 12)],
    "d": [BOWL, [(0.9, 0), (0.9, 1)]],
    "e": [[(0, 0.7), (0.9, 0.7)] + arc(0.45, 0.7, 0.45, 0.3, 0, 315, 14)],
    "f": [arc(0.7, 0.2, 0.3, 0.2, 20, 180) + [(0.4, 1)], [(0.1, 0.45), (0.8, 0.45)]],
    "h": [[(0, 0), (0, 1)], [(0, 0.65)] + arc(0.45, 0.65, 0.45, 0.25, 180, 0) + [(0.9, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.8, 0.4), (0, 0.8)], [(0.3, 0.68), (0.9, 1)]],
    "m": [[(0, 0.4), (0, 1)], [(0, 0.6)] + arc(0.25, 0.6, 0.25, 0.2, 180, 0) + [(0.5, 1)],
          [(0.5, 0.6)] + arc(0.75, 0.6, 0.25, 0.2, 180, 0) + [(1, 1)]],
    "n": [[(0, 0.4), (0, 1)], [(0, 0.65)] + arc(0.45, 0.65, 0.45, 0.25, 180, 0) + [(0.9, 1)]],
    "p": [[(0, 0.4), (0, 1.35)], BOWL],
    "r": [[(0, 0.4), (0, 1)], [(0, 0.7)] + arc(0.4, 0.7, 0.4, 0.3, 180, 60, 6)],
    "t": [[(0.4, 0.1), (0.4, 0.85)] + arc(0.65, 0.85, 0.25, 0.15, 180, 300, 5), [(0.05, 0.4), (0.8, 0.4)]],
    "u": [[(0, 0.4)] + arc(0.45, 0.75, 0.45, 0.25, 180, 360) + [(0.9, 0.4)], [(0.9, 0.4), (0.9, 1)]],
    "v": [[(0, 0.4), (0.5, 1), (1, 0.4)]],
    "w": [[(0, 0.4), (0.25, 1), (0.5, 0.6), (0.75, 1), (1, 0.4)]],
    "x": [[(0, 0.4), (0.9, 1)], [(0.9, 0.4), (0, 1)]],
    "y": [[(0, 0.4), (0.5, 1)], [(1, 0.4), (0.3, 1.35)]],
}
#: Letters a hand may write much as a digit, each with what tells it from one.
LOOKALIKE: dict[str, list[Stroke]] = {
    "B": [[(0, 0), (0, 1)], [(0, 0), (0.45, 0)] + arc(0.45, 0.25, 0.3, 0.25, 90, -90) + [(0, 0.5)],
          [(0, 0.5), (0.5, 0.5)] + arc(0.5, 0.75, 0.35, 0.25, 90, -90) + [(0, 1)]],
    "D": [[(0, 0), (0, 1)], [(0, 0), (0.35, 0)] + arc(0.35, 0.5, 0.55, 0.5, 90, -90) + [(0, 1)]],
    "G": [arc(0.5, 0.5, 0.5, 0.5, 45, 360, 16) + [(0.55, 0.5)]],
    "Q": [arc(0.5, 0.5, 0.5, 0.5, 0, 360, 18), [(0.55, 0.7), (1, 1.1)]],
    "b": [[(0, 0), (0, 1)], arc(0.45, 0.7, 0.45, 0.3, 0, 360, 16)],
    "g": [arc(0.45, 0.65, 0.4, 0.25, 0, 360, 14), [(0.85, 0.4), (0.85, 1.1)] + arc(0.45, 1.1, 0.4, 0.25, 0, -160)],
    "q": [BOWL, [(0.9, 0.4), (0.9, 1.35)]],
}
SKELETONS: dict[str, list[Stroke]] = {**UPPER, **LOWER, **LOOKALIKE}


def draw(strokes: list[Stroke], rng: np.random.Generator) -> np.ndarray:
    """One (28, 28) float32 image of ``strokes`` drawn by a shaky pen: every point moved a
    little, the letter made narrower or wider, then drawn with a pen 1.2-3 px wide."""
    width = float(rng.uniform(0.6, 1.2))  # of the letter, to its height
    jitter = float(rng.uniform(0.01, 0.05))
    starts, ends = [], []
    for stroke in strokes:
        p = np.asarray(stroke, np.float64) * [width, 1.0]
        p += rng.normal(0, jitter, p.shape)
        starts.append(p[:-1] if len(p) > 1 else p)
        ends.append(p[1:] if len(p) > 1 else p)
    a, b = np.concatenate(starts), np.concatenate(ends)
    low, high = np.minimum(a, b).min(axis=0), np.maximum(a, b).max(axis=0)
    scale = 20 / max(float((high - low).max()), 1e-6)
    middle = (low + high) / 2
    a, b = (a - middle) * scale + SIDE / 2, (b - middle) * scale + SIDE / 2  # the letter's box fills 20 of 28 px
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)[:, None, :]  # (784, 1, 2)
    along = b - a  # each segment's distance to each pixel, in one pass
    t = np.clip(((pixels - a) * along).sum(axis=2) / np.maximum((along**2).sum(axis=1), 1e-9), 0, 1)
    distance = np.sqrt(((pixels - a - t[..., None] * along) ** 2).sum(axis=2)).min(axis=1)
    pen = float(rng.uniform(1.2, 3.0))
    return (1 - np.clip(distance - pen / 2, 0, 1)).reshape(SIDE, SIDE).astype(np.float32)


def pen_letters(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 28, 28) float32 letters of :data:`SKELETONS`, each drawn anew by :func:`draw`."""
    names = sorted(SKELETONS)
    picks = rng.integers(0, len(names), n)
    out = np.zeros((n, SIDE, SIDE), np.float32)
    for i, pick in enumerate(picks):
        out[i] = draw(SKELETONS[names[pick]], rng)
    return out
