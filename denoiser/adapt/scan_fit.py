"""A folder's scanning, fitted: the degradation (:mod:`denoiser.noise.degrade`) whose scans of
known digits look, to the cleaner, like the folder's own.

A folder of real scans has no clean copies, but its look can be measured: statistics of its
scans in the model's look (:func:`folder_stats`: the paper's level, spread and correlation
between neighbours, its slow variation and tilt, specks; the ink's level and spread; the
tones just outside and just inside a stroke's edge, which blur moves; the mean gradient),
split into paper and ink by the parent's outputs. :func:`fit` searches the degradation's
parameters (paper tone, ink contrast, blur, noise level and kind, JPEG quality, paper
texture, uneven lighting, dust) for the set whose scans of MNIST digits, prepared and cleaned
the same way, give the same statistics: a random search over the whole range, then steps
around the best few. The fitted degradation then makes training pairs with truth
(:meth:`ScanFit.pairs`), as a supervised fine-tune on the folder's exact degradation would.

    found = fit(parent, inputs, outputs, digits, headroom=1.25)
    noisy, clean = found.pairs(digits[:64], seed=step, headroom=1.25)   # (64, 1, 28, 28) each

``found.distance`` says how well the family describes the folder (the sum of squared
differences of the statistics, each in units of its spread over the random candidates):
a printed guilloche or real handwriting's neighbours are not in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.adapt.sample import centre_crops
from denoiser.models.infer import denoise_images
from denoiser.models.precision import FP32, Precision
from denoiser.noise.degrade import Degradation, degrade
from denoiser.scans import restore

STATS = ("paper_mean", "paper_std", "neighbours_1", "neighbours_2", "slow", "tilt", "specks", "ink", "ink_spread",
         "edge_out", "edge_in", "ink_core", "gradient")
#: Each fitted parameter is drawn from this share either side of its value when pairs are made:
#: a folder's scans vary, and its statistics are medians.
WIDTH = 0.3
_OFF = dict(p_texture=0.0, p_lighting=0.0, p_blur=0.0, p_dust=0.0, p_jpeg=0.0, p_second_noise=0.0, shuffle=False,
            p_motion=0.0)
#: (low, high) of each parameter in the search; those with a chance are off otherwise.
RANGES = {"paper": (0.0, 0.35), "contrast": (0.2, 1.0), "noise": (0.02, 0.6), "blur": (0.3, 1.5),
          "jpeg": (30.0, 95.0), "texture": (0.0, 0.06), "lighting": (0.0, 1.0), "dust": (0.002, 0.06)}
CHANCE = {"blur": 0.6, "jpeg": 0.5, "texture": 0.4, "lighting": 0.4, "dust": 0.3}
NOISE_KINDS = ("gaussian", "poisson-gaussian", "speckle")
MAX_SCALE = 4.0  # the degradation's largest resampling factor
FIT_IMAGES = 200  # of a folder's sampled scans measured for the fit (fit_folder)
FIT_DIGITS = 96  # MNIST digits scanned with each candidate


def image_stats(x: torch.Tensor, y: torch.Tensor) -> list[float] | None:
    """:data:`STATS` of one scan ``x`` in the model's look given the parent's output ``y``
    (both (1, 1, H, W)); None where it has too little paper or ink to measure."""
    ink = y > 0.5
    paper = ~(F.max_pool2d((y > 0.2).float(), 5, 1, 2) > 0)
    if paper.sum() < 30 or ink.sum() < 8:
        return None
    edge_out = (F.max_pool2d(ink.float(), 3, 1, 1) > 0) & ~ink
    edge_in = ink & (F.max_pool2d((~ink).float(), 3, 1, 1) > 0)
    core = ink & ~edge_in
    p = x[paper]
    level = float(p.mean())
    c = x - level
    power = float((c[paper] ** 2).mean().clamp_min(1e-6))

    def neighbours(lag: int) -> float:
        both = paper[..., :, lag:] & paper[..., :, :-lag]
        return float((c[..., :, lag:] * c[..., :, :-lag])[both].mean()) / power if both.any() else 0.0

    half = x.shape[-1] // 2
    left, right = paper[..., :, :half], paper[..., :, half:]
    tilt = abs(float(x[..., :, :half][left].mean() - x[..., :, half:][right].mean())) \
        if left.any() and right.any() else 0.0
    inked = x[ink]
    return [level, float(p.std()), neighbours(1), neighbours(2), float(F.avg_pool2d(x, 5, 1, 2)[paper].std()), tilt,
            float((p > 0.4).float().mean()), float(inked.median()),
            float(inked.quantile(0.75) - inked.quantile(0.25)),
            float(x[edge_out].median()) - level if edge_out.any() else 0.0,
            float(x[edge_in].median()) if edge_in.any() else 0.0,
            float(x[core].median()) if core.any() else float(inked.median()),
            float((x[..., :, 1:] - x[..., :, :-1]).abs().mean())]


def folder_stats(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> np.ndarray:
    """The median of :func:`image_stats` over the scans that have paper and ink to measure;
    raises ValueError where none has."""
    rows = [s for x, y in zip(inputs, outputs, strict=True)
            if (s := image_stats(torch.from_numpy(np.asarray(x, np.float32))[None, None],
                                 torch.from_numpy(np.asarray(y, np.float32))[None, None])) is not None]
    if not rows:
        raise ValueError(f"none of the {len(inputs)} scans has both paper and ink to measure")
    return np.median(np.asarray(rows), axis=0)


def draw(rng: np.random.Generator) -> dict[str, float]:
    """Random parameters over :data:`RANGES` (each optional one on with its :data:`CHANCE`)."""
    params = {k: float(rng.uniform(*RANGES[k])) for k in RANGES}
    for k, chance in CHANCE.items():
        if rng.random() >= chance:
            params[k] = 0.0
    params["noise_kind"] = int(rng.integers(0, len(NOISE_KINDS)))
    return params


def nudge(params: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """A step from ``params``: each value moved by a tenth of its range, an optional one
    switched on or off now and then, the noise's kind changed now and then."""
    out = dict(params)
    for k, (low, high) in RANGES.items():
        if k in CHANCE and rng.random() < 0.15:
            out[k] = 0.0 if out[k] else float(rng.uniform(low, high))
        elif k not in CHANCE or out[k]:
            out[k] = float(np.clip(out[k] + rng.normal(0, 0.1 * (high - low)), low, high))
    if rng.random() < 0.1:
        out["noise_kind"] = int(rng.integers(0, len(NOISE_KINDS)))
    return out


def to_degradation(params: dict[str, float], width: float = WIDTH) -> Degradation:
    """The :class:`Degradation` drawing each parameter within ``width`` of its value."""
    def near(k: str, low: float = 0.0, high: float = 1e9) -> tuple[float, float]:
        # An optional component that is off (0) has no range to draw; paper at 0 is white paper.
        v = params[k] if params[k] or k not in CHANCE else float(np.mean(RANGES[k]))
        return max(low, v * (1 - width)), min(high, v * (1 + width))
    kinds = [0.0] * len(NOISE_KINDS)
    kinds[int(params["noise_kind"])] = 1.0
    scale = float(np.clip(params.get("scale", 1.0), 1.0, MAX_SCALE))
    return Degradation(**{**_OFF, **{f"p_{k}": float(params[k] > 0) for k in CHANCE}}, dark_ink=1.0,
                       scale=(scale, scale), p_scale=1.0,
                       paper=near("paper", 0.0, 0.5), contrast=near("contrast", 0.01, 1.0), blur=near("blur"),
                       jpeg=near("jpeg", 30.0, 100.0), texture=near("texture"), lighting=near("lighting"),
                       dust=near("dust", 0.0, 1.0), p_noise=1.0, noise=near("noise"), noise_kinds=tuple(kinds))


def scan_pairs(params: dict[str, float], digits: np.ndarray, seed: int,
               headroom: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, truths) in the model's look: ``digits`` (N, 28, 28) in [0, 1] scanned with
    ``params`` (:func:`denoiser.scans.restore.in_model_look`)."""
    truth, noisy = degrade(torch.from_numpy(np.asarray(digits, np.float32)), to_degradation(params),
                           rng=torch.Generator().manual_seed(seed))
    return restore.in_model_look(list(truth.numpy()), list(noisy.numpy()), headroom)


@dataclass
class ScanFit:
    params: dict[str, float]
    distance: float  # of the statistics, in units of their spread over the random candidates
    folder: np.ndarray  # the folder's statistics
    fitted: np.ndarray  # the fitted degradation's
    candidates: int
    seconds: float

    def pairs(self, digits: torch.Tensor, seed: int, headroom: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) (N, 1, 28, 28) in the model's look for ``digits`` (N, 1, 28, 28),
        ink near 1, scanned with the fitted degradation."""
        inputs, truths = scan_pairs(self.params, digits[:, 0].clamp(0, 1).numpy(), seed, headroom)
        return centre_crops(inputs), centre_crops(truths)

    def summary(self) -> dict:
        shown = {k: round(float(v), 3) for k, v in self.params.items() if k != "noise_kind"}
        return {**shown, "noise_kind": NOISE_KINDS[int(self.params["noise_kind"])],
                "distance": round(self.distance, 3), "candidates": self.candidates, "seconds": round(self.seconds, 1),
                "stats": {k: [round(float(a), 4), round(float(b), 4)]
                          for k, a, b in zip(STATS, self.folder, self.fitted, strict=True)}}


def folder_scale(scales: list[float] | None) -> float:
    """The scale to scan the fit's digits at: the median of the sampled scans' scales (1 for a
    scan the cleaner does not shrink), within what the degradation draws (1 to :data:`MAX_SCALE`)."""
    if not scales:
        return 1.0
    return float(np.clip(np.median(scales), 1.0, MAX_SCALE))


def fit(parent: torch.nn.Module, inputs: list[np.ndarray], outputs: list[np.ndarray], digits: np.ndarray, *,
        headroom: float, random: int = 100, refine: int = 60, seconds: float | None = None, seed: int = 0,
        device: torch.device | str = "cpu", precision: Precision = FP32, scale: float = 1.0) -> ScanFit:
    """The degradation whose scans of ``digits`` (N, 28, 28, in [0, 1]; about a hundred)
    match ``inputs`` (the folder's scans in the model's look, ``outputs`` the parent's of
    them) in :func:`folder_stats`: ``random`` candidates, then ``refine`` steps around the
    best five. The same digits and draws for every candidate, so only the parameters differ.
    ``seconds``: a budget; the random candidates stop at 60% of it, the steps at all of it
    (at least two candidates are measured whatever it is). ``scale``: the folder's scale (its
    scans' stroke width / MNIST's, where the cleaner shrinks them; :func:`folder_scale`): every
    candidate scans the digits that much larger, and they are shrunk back as the folder's were,
    so the shrinking's softening and averaged noise are in the candidates too."""
    started = time.perf_counter()
    target = folder_stats(inputs, outputs)
    rng = np.random.default_rng(seed)

    def measure(params: dict[str, float]) -> np.ndarray:
        scanned, _ = scan_pairs(params, digits, seed, headroom)
        try:
            return folder_stats(scanned, denoise_images(parent, scanned, device=device, precision=precision))
        except ValueError:  # the candidate left no ink to measure: as far from the folder as can be
            return np.full(len(STATS), np.nan)

    def over(share: float) -> bool:
        return seconds is not None and len(measured) >= 2 and time.perf_counter() - started > share * seconds

    candidates: list[dict[str, float]] = []
    measured: list[np.ndarray] = []
    while len(candidates) < max(2, random) and not over(0.6):
        candidates.append({**draw(rng), "scale": scale})
        measured.append(measure(candidates[-1]))
    spread = np.nanstd(np.asarray(measured), axis=0) + 1e-4

    def distance(v: np.ndarray) -> float:
        d = float(np.sum(((v - target) / spread) ** 2))
        return d if np.isfinite(d) else float("inf")

    scores = [distance(v) for v in measured]
    for _ in range(refine):
        if over(1.0):
            break
        best = np.argsort(scores)[:5]
        params = nudge(candidates[int(rng.choice(best))], rng)
        candidates.append(params)
        measured.append(measure(params))
        scores.append(distance(measured[-1]))
    i = int(np.argmin(scores))
    return ScanFit(candidates[i], scores[i], target, measured[i], len(candidates), time.perf_counter() - started)


def fit_folder(parent: torch.nn.Module, inputs: list[np.ndarray], outputs: list[np.ndarray], digits: torch.Tensor,
               *, headroom: float, candidates: int, seconds: float, seed: int, device: torch.device | str = "cpu",
               precision: Precision = FP32, scale: float = 1.0) -> ScanFit:
    """:func:`fit` on the first :data:`FIT_IMAGES` of a folder's sample (``outputs``: the
    parent's), scanning a seeded :data:`FIT_DIGITS` of ``digits`` (N, 1, 28, 28): ``candidates``
    random ones, then 0.6 times as many steps, within ``seconds``."""
    pick = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))[:FIT_DIGITS]
    return fit(parent, inputs[:FIT_IMAGES], outputs[:FIT_IMAGES], digits[pick, 0].numpy(), headroom=headroom,
               random=candidates, refine=round(0.6 * candidates), seconds=seconds, seed=seed, device=device,
               precision=precision, scale=scale)


class PairPool:
    """Pairs from a :class:`ScanFit`, kept in a pool: scanning and preparing a digit costs about
    a training step's share of one, so each step scans only ``fresh`` of its digits and draws
    the rest of its batch from the pool of those scanned before (first filled with ``size``)."""

    def __init__(self, found: ScanFit, digits: torch.Tensor, *, headroom: float, seed: int, size: int = 2048,
                 fresh: float = 0.25) -> None:
        self.found, self.headroom, self.fresh = found, headroom, fresh
        pick = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))[:size]
        self.noisy, self.clean = found.pairs(digits[pick], seed, headroom)
        self.next = 0  # the oldest pair, replaced next

    def batch(self, clean: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) pairs, as many as ``clean`` has digits: a ``fresh`` share of them scanned
        now (and put in the pool in place of its oldest), the others drawn from the pool."""
        n = len(clean)
        k = max(1, round(n * self.fresh))
        pick = torch.randperm(n, generator=rng)[:k]
        noisy, truth = self.found.pairs(clean[pick], int(torch.randint(0, 2**31, (1,), generator=rng)), self.headroom)
        slots = (self.next + torch.arange(k)) % len(self.noisy)
        self.noisy[slots], self.clean[slots], self.next = noisy, truth, int(slots[-1] + 1) % len(self.noisy)
        drawn = torch.randint(0, len(self.noisy), (n - k,), generator=rng)
        return torch.cat([noisy, self.noisy[drawn]]), torch.cat([truth, self.clean[drawn]])
