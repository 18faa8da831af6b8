"""Training the digit-shape model (:mod:`denoiser.checks.shapes`): digits, and non-digits made from them.

The classifier learns "not a digit" from shapes made out of digits, from pen strokes and
from letters drawn by a pen, never from a font's letters, so that what it flags is not
tuned to the letters it is measured on (``python -m bench.quality``):

* letters drawn from skeletons of pen strokes (:mod:`denoiser.training.letters`), as many as half a
  batch's digits: with only the made-up shapes below, the flag caught 42% of typed letters
  scanned with little noise and 77% at the tutorial's noise;
* halves of two different digits joined at a random height;
* digits turned a quarter or half turn, or mirrored (not 0, 1, 6, 8 or 9, which stay digits);
* two different digits overlapping, side by side by 5-8 pixels;
* two or three random pen strokes (quadratic curves of random width).

Every shape, digit or not, goes through the same drawing (thicker, thinner, slanted, turned,
rescaled; then :func:`denoiser.checks.shapes.frame`) and the same marks of cleaning (softened edges,
gaps, specks: :func:`cleaned_look`): when only the digits were redrawn, the model learnt to
tell a redrawn image from a plain one instead of a digit from a non-digit, and flagged half
of the held-out digits. Digits typed in Pillow's font are among the digits: printed digits
are digits too.

    weights = ensure_shapes("data/models")   # trained on MNIST first if the store lacks one
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.checks.shapes import (
    HELD_OUT,
    NOT_A_DIGIT,
    QUANTILE,
    VERSION,
    ShapeModel,
    ShapeNet,
    find_shapes,
    frame,
    load_shapes,
    record_calibration,
    save_shapes,
    shapes_id,
)
from denoiser.data.arrays import to_float
from denoiser.data.datasets import MNIST, IdxDataset
from denoiser.data.mnist import array_digest, load_dataset
from denoiser.models.checkpoint import Checkpoint, load_model
from denoiser.models.infer import denoise_images
from denoiser.models.precision import FP32, Precision, resolve_precision
from denoiser.noise import degrade
from denoiser.noise.paper import with_neighbours
from denoiser.scans.restore import model_headroom, prepare_many
from denoiser.training.letters import pen_letters

log = logging.getLogger(__name__)

CALIBRATION_NOISE = (0.2, 0.35, 0.5)  # the noise of the digits a threshold is set on
CALIBRATION_DIGITS = 3000
TYPED = 2000  # digits typed in Pillow's font, an eighth of every batch
LETTERS = 10000  # letters drawn by a pen (denoiser.training.letters), among the non-digits of every batch
LETTER_SHARE = 0.5  # of a batch's digits: how many such letters join it
#: Digits that a turn or a mirror leaves a digit (0, 1, 8), or makes another one (6, 9).
SYMMETRIC = (0, 1, 6, 8, 9)
#: Real-looking scans the threshold is also set on (:func:`calibrate`).
REAL_LOOKING = replace(degrade.SCAN, p_pattern=0.6, p_neighbour=0.6, p_pure=0.2)
IN_A_ROW = 0.3  # of a batch's digits: drawn with a neighbour's piece at an edge (as_in_a_row)
RULED = 0.2  # of those: with a rule or underline left across them


def redrawn(images: torch.Tensor, g: torch.Generator, *, neighbours: bool = True) -> torch.Tensor:
    """(N, 28, 28) shapes drawn otherwise: thicker, thinner or as they are; slanted, turned
    and rescaled; then framed (whole, or with ``neighbours=False`` as a scan is judged)."""
    n, x = len(images), images[:, None]
    stroke = torch.randint(0, 3, (n,), generator=g).view(-1, 1, 1, 1)
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = F.pad(-F.max_pool2d(-x, 2, 1, 0), (0, 1, 0, 1))
    x = torch.where(stroke == 0, thick, torch.where(stroke == 1, thin, x))
    shear = (torch.rand(n, generator=g) - 0.5) * 0.8
    turn = (torch.rand(n, generator=g) - 0.5) * 0.4
    scale = 0.8 + 0.4 * torch.rand(n, generator=g)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(turn) / scale, shear - torch.sin(turn)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(turn), torch.cos(turn) / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return frame(F.grid_sample(x, grid, align_corners=False)[:, 0].clamp(0, 1), neighbours=neighbours)


def as_in_a_row(digits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, 28, 28) digits as crops of a written amount show them: a piece of a neighbouring
    digit at the left or right edge (near, or touching), and for some a rule or an underline
    the cleaner left. They are still digits."""
    n = len(digits)
    x = with_neighbours(digits, torch.ones(n, dtype=torch.bool), g)
    rows = torch.arange(28).view(1, 28, 1)
    cols = torch.arange(28).view(1, 1, 28)
    row = torch.randint(20, 27, (n, 1, 1), generator=g)
    start, length = torch.randint(0, 10, (n, 1, 1), generator=g), torch.randint(12, 28, (n, 1, 1), generator=g)
    rule = ((rows == row) & (cols >= start) & (cols < start + length)).float() * 0.8
    ruled = torch.rand(n, 1, 1, generator=g) < RULED
    return torch.where(ruled, torch.maximum(x, rule), x)


def cleaned_look(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, 28, 28) framed shapes with what a denoiser's output of a noisy scan shows, each
    part at random: softened edges, gaps where faint ink was lost, and specks of noise it
    kept."""
    n, x = len(images), images[:, None]
    soft = torch.rand(n, 1, 1, 1, generator=g) * 0.6
    x = (1 - soft) * x + soft * F.avg_pool2d(x, 3, 1, 1)
    coarse = torch.rand(n, 1, 7, 7, generator=g)
    field = F.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    gaps = torch.rand(n, 1, 1, 1, generator=g) * 0.25  # share of the field that is lost
    x = x * (field > gaps).float()
    specks = (torch.rand(n, 1, 28, 28, generator=g) < 0.004 * torch.rand(n, 1, 1, 1, generator=g)).float()
    x = torch.maximum(x, F.max_pool2d(specks, 2, 1, 1)[..., :28, :28] * 0.8)
    return x[:, 0].clamp(0, 1)


def pen_strokes(n: int, g: torch.Generator, strokes: int = 3) -> torch.Tensor:
    """(n, 28, 28) images of two or three random quadratic curves of random width."""
    t = torch.linspace(0, 1, 24)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    pixels = torch.stack([xs.flatten(), ys.flatten()], dim=1)[None].expand(n, -1, -1)
    out = torch.zeros(n, 28 * 28)
    for k in range(strokes):
        p = 4 + 20 * torch.rand(n, 3, 2, generator=g)  # start, control and end points
        curve = ((1 - t)[None, :, None] ** 2 * p[:, None, 0] + (2 * (1 - t) * t)[None, :, None] * p[:, None, 1]
                 + (t**2)[None, :, None] * p[:, None, 2])
        distance = torch.cdist(pixels, curve).amin(dim=2)
        width = 1.0 + torch.rand(n, 1, generator=g)
        drawn = (torch.rand(n, 1, generator=g) < 0.8) | (k == 0)  # some have two strokes
        out = torch.maximum(out, drawn * (1 - (distance - width / 2).clamp(0, 1)))
    return out.view(n, 28, 28)


def non_digits(digits: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shapes that are not digits, made from (N, 28, 28) ``digits`` (about N of them; the
    made ones that could still be a digit are left out)."""
    n = len(digits)
    kind = torch.randint(0, 4, (n,), generator=g)
    other = torch.randperm(n, generator=g)
    cut = torch.randint(10, 19, (n,), generator=g).view(-1, 1, 1)
    joined = torch.where(torch.arange(28).view(1, 28, 1) < cut, digits, digits[other])
    quarter = int(torch.randint(1, 4, (1,), generator=g))
    turned = torch.rot90(digits, quarter, (1, 2)) if bool(torch.rand(1, generator=g) < 0.5) \
        else torch.flip(digits, (2,))
    shift = int(torch.randint(5, 9, (1,), generator=g)) * (1 if bool(torch.rand(1, generator=g) < 0.5) else -1)
    overlapping = torch.maximum(digits, torch.roll(digits[other], shifts=shift, dims=2))
    made = torch.stack([joined, turned, overlapping, pen_strokes(n, g)])[kind, torch.arange(n)]
    keep = ~((kind == 1) & torch.isin(labels, torch.tensor(SYMMETRIC)))
    keep &= ~((kind != 1) & (kind != 3) & (labels == labels[other]))
    return made[keep]


def typed_digits(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 28, 28) digits typed in Pillow's font (of random size, weight and slant) and their
    labels: printed digits are digits too, so the shape and not the pen must decide."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415 - only for training

    labels = torch.randint(0, 10, (n,), generator=g)
    sizes = torch.randint(14, 27, (n,), generator=g)
    weights = torch.randint(0, 3, (n,), generator=g)
    angles = (torch.rand(n, generator=g) - 0.5) * 30
    out = np.zeros((n, 28, 28), np.uint8)
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
    for i in range(n):
        size = int(sizes[i])
        font = fonts.setdefault(size, ImageFont.load_default(size=size))
        canvas = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(canvas).text((14, 14), str(int(labels[i])), fill=255, anchor="mm", font=font,
                                    stroke_width=int(weights[i]) // 2, stroke_fill=255)
        out[i] = np.asarray(canvas.rotate(float(angles[i]), resample=Image.BILINEAR))
    return torch.from_numpy(to_float(out)), labels


def train_shapes(images: np.ndarray, labels: np.ndarray, *, epochs: int = 3, seed: int = 0,
                 batch_size: int = 128, held_out: int = HELD_OUT) -> ShapeModel:
    """Train on uint8 (N, 28, 28) digits and the non-digits made from them, and set the
    threshold on the last ``held_out`` digits (a fifth of the set when it is small)."""
    if len(images) != len(labels) or len(images) < 20:
        raise ValueError(f"need at least 20 labelled digits, got {len(images)} images and {len(labels)} labels")
    started = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(to_float(images))
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    held_out = min(held_out, len(x) // 5)
    fit_x, fit_y, check_x = x[:-held_out], y[:-held_out], x[-held_out:]
    typed_x, typed_y = typed_digits(TYPED, g)
    letters_x = torch.from_numpy(pen_letters(min(LETTERS, len(fit_x)), np.random.default_rng(seed)))
    net = ShapeNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(fit_x), generator=g)
        for start in range(0, len(order), batch_size):
            part = order[start : start + batch_size]
            half, typed = len(part) // 2, torch.randint(0, TYPED, (len(part) // 8,), generator=g)
            shapes_x = torch.cat([fit_x[part], typed_x[typed]])
            shapes_y = torch.cat([fit_y[part], typed_y[typed]])
            row = torch.rand(len(shapes_x), generator=g) < IN_A_ROW
            digits = redrawn(shapes_x, g)
            if row.any():  # framed as a scan is judged: the neighbour's piece left out where it is apart
                digits[row] = redrawn(as_in_a_row(shapes_x[row], g), g, neighbours=False)
            drawn = letters_x[torch.randint(0, len(letters_x), (int(len(part) * LETTER_SHARE),), generator=g)]
            others = redrawn(torch.cat([non_digits(shapes_x[:half], shapes_y[:half], g), drawn]), g)
            logits = net(cleaned_look(torch.cat([digits, others]), g))
            target = torch.cat([shapes_y, torch.full((len(others),), NOT_A_DIGIT)])
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        log.info("digit shapes: epoch %d/%d, loss %.3f", epoch + 1, epochs, loss.item())
    net.eval()
    with torch.inference_mode():
        # Held-out digits drawn as varied as in training: the threshold is set on handwriting
        # of many kinds, not on MNIST's alone.
        scores = torch.cat([net.scores(redrawn(check_x[s : s + 2048], g)) for s in range(0, len(check_x), 2048)])
        net.threshold.fill_(float(torch.quantile(scores, QUANTILE)))
    metadata = {"version": VERSION, "images": int(len(fit_x)), "held_out": int(held_out), "epochs": epochs,
                "seed": seed, "quantile": QUANTILE, "threshold": float(net.threshold),
                "seconds": round(time.perf_counter() - started, 1)}
    return ShapeModel(net, metadata)


def ensure_shapes(models_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                  dataset: IdxDataset | None = None, download: bool = True, retrain: bool = False,
                  cleaner: Checkpoint | None = None) -> Path:
    """The stored shape model's weights, trained on MNIST's training digits first if the
    store lacks one (about 3 minutes on 2 CPU cores), and calibrated for ``cleaner`` if it was
    not yet (a few seconds; a model adapted from a calibrated parent takes the parent's
    threshold, with no MNIST needed). Raises :class:`denoiser.data.mnist.DataError` when MNIST cannot be
    had."""
    found = None if retrain else find_shapes(models_dir)
    model = load_shapes(found) if found is not None else None
    if model is not None and (cleaner is None or model.calibrated_for(cleaner.model_id) is not None):
        return found  # type: ignore[return-value]
    parent = ((cleaner.metadata.get("adapted") or {}).get("parent") if cleaner is not None else None)
    if model is not None and parent and (inherited := model.calibrated_for(parent)) is not None:
        # A model adapted to a folder flags at its parent's threshold (as ShapeModel.for_model does where
        # clean --adapt switches to it): its own would be set on its outputs of noisy MNIST digits, not of
        # its folder's kind. At the parent's, the cheque-adapted model flagged 8.98% of the 4,898 cheque
        # digits, as the parent did (docs/LOG.md, 2026-12-07, seventh session).
        record_calibration(found, cleaner.model_id, inherited)
        log.info("digit-shape model %s: flags outputs of %s (adapted from %s) at its parent's threshold, %.2f",
                 found.stem, cleaner.model_id, parent, inherited)
        return found  # type: ignore[return-value]
    mnist = load_dataset(data_dir, dataset=dataset or MNIST, download=download)
    if model is None:
        log.info("training the digit-shape model on %d digits", len(mnist.train_images))
        model = train_shapes(mnist.train_images, mnist.train_labels)
        found = save_shapes(model, models_dir, shapes_id(array_digest(mnist.train_images)))
        log.info("digit-shape model %s: trained in %.0f s", found.stem, model.metadata["seconds"])
    if cleaner is not None:
        held_out = min(HELD_OUT, len(mnist.train_images) // 5)
        digits = mnist.train_images[-held_out:][:CALIBRATION_DIGITS]  # the held-out digits
        threshold = calibrate(model, load_model(cleaner), model_headroom(cleaner.metadata), digits,
                              precision=resolve_precision("auto", torch.device("cpu")))  # as clean runs it
        record_calibration(found, cleaner.model_id, threshold)
        log.info("digit-shape model %s: flags outputs of %s scoring above %.2f", found.stem, cleaner.model_id,
                 threshold)
    return found  # type: ignore[return-value]


def calibrate(shape_model: ShapeModel, cleaner: torch.nn.Module, headroom: float, digits: np.ndarray, *,
              noise_levels: tuple[float, ...] = CALIBRATION_NOISE, seed: int = 0,
              precision: Precision = FP32, real_looking: bool = True) -> float:
    """The threshold at which :data:`denoiser.checks.shapes.QUANTILE` of ``digits`` (uint8, never
    trained on), cleaned by ``cleaner`` as ``clean`` cleans, score at or below: a model's
    outputs of noisy digits are not clean digits (a threshold set on clean ones flagged 10%
    of MNIST's test digits at the tutorial's noise). The digits are given clipped Gaussian
    noise of each level in turn, and (as many again) rendered as real-looking scans: the scan
    degradations with a printed pattern beneath the ink and a neighbour's piece at an edge
    (:data:`REAL_LOOKING`), as crops of written amounts are (unless not ``real_looking``)."""
    rng = np.random.default_rng(seed)
    clean = to_float(digits)
    parts = np.array_split(np.arange(len(clean)), len(noise_levels) + int(real_looking))
    scores = []
    for level, part in zip(noise_levels, parts, strict=False):
        noisy = np.clip(clean[part] + level * rng.standard_normal(clean[part].shape), 0, 1).astype(np.float32)
        scores.append(_cleaned_scores(shape_model, cleaner, headroom, list(noisy), precision))
    if real_looking:
        _, scans = degrade.degrade(torch.from_numpy(clean[parts[-1]]), REAL_LOOKING,
                                   rng=torch.Generator().manual_seed(seed), scale=1.0)
        scores.append(_cleaned_scores(shape_model, cleaner, headroom, list(scans.numpy()), precision))
    return float(np.quantile(np.concatenate(scores), QUANTILE))


def _cleaned_scores(shape_model: ShapeModel, cleaner: torch.nn.Module, headroom: float, scans: list[np.ndarray],
                    precision: Precision) -> np.ndarray:
    mapped = [m for m, _ in prepare_many(scans, headroom=headroom)]
    return shape_model.scores(denoise_images(cleaner, mapped, precision=precision), precision=precision)
