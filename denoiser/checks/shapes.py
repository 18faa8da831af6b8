"""Is a cleaned scan a digit at all? A model of digit shapes for the OOD flag.

A letter is strokes on paper, as a digit is: its tones, ink and noise are those of a digit,
so only the shape tells them apart. The shape model is a small classifier (three 3x3 conv
layers and a 128-wide layer) with eleven answers: the ten digits and "not a digit". It is
trained (:mod:`denoiser.training.shapes`) on MNIST's training digits, drawn otherwise as
well, and on non-digits made from them (halves of two different digits joined, digits
turned or mirrored, two digits overlapping, random pen strokes) and on letters drawn by a
pen from skeletons (:mod:`denoiser.training.letters`): no font's letter is ever shown to it. A
scan's score is the probability it gives to "not a digit"; above the threshold the scan is
flagged. The threshold is set for each cleaning model on that
model's outputs of noisy held-out digits (:meth:`ShapeModel.for_model`; the 96th percentile
of their scores), since a model's outputs of noisy digits are not clean digits; the one set
at training, on held-out digits drawn otherwise, serves a model not calibrated for.

Each scan is first brought to MNIST's framing: its ink's bounding box scaled into 20x20 and
its centre of mass put at the centre of 28x28 (:func:`frame`), so margins, size and place
do not count. Only digit-sized scans are judged (:data:`MAX_SIDE`): a page of many digits
is no single digit's shape. A crop of a written amount often holds a neighbour's stroke
touching the digit, which no gap separates: each scan is judged whole and with a fifth cut
off its left or its right edge (:data:`WINDOWS`), and its most digit-like reading counts.

    weights = shape_training.ensure_shapes(models_dir, cleaner=checkpoint)  # models_dir/shapes/<id>.pt, .json
    unlike = load_shapes(weights).for_model(checkpoint.model_id).unlike(outputs)  # in the model's look
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from denoiser.files import read_json, write_json
from denoiser.models.checkpoint import load_weights, save_weights
from denoiser.models.precision import FP32, Precision, autocast

SIDE, BOX = 28, 20  # MNIST's framing: the ink's box fits 20x20, centred by mass in 28x28
MAX_SIDE = 2 * SIDE  # larger scans (pages) are not judged by shape
INK = 0.3  # pixels above this share of the scan's peak are ink, for the box
GAP = 2  # empty columns (rows) that end the digit's run of ink (:func:`central`)
QUANTILE = 0.96  # of held-out training digits' scores: the threshold
HELD_OUT = 5000
VERSION = 3  # part of the stored id: bump when a change alters what training produces
FOLDER = "shapes"
NOT_A_DIGIT = 10  # the class index of "not a digit"
#: The parts of a scan's width it is judged on (from, to): whole, and without a fifth at the
#: left or the right, where a neighbouring digit's stroke lies in crops of written amounts.
#: On real cheque digits this halved the share flagged by shape (19% to 9% at a score of
#: 0.7) and cost 5 points of letters (69% to 65%); cutting both edges at once or a quarter
#: cost letters more (docs/LOG.md, 2026-12-07).
WINDOWS = ((0.0, 1.0), (0.2, 1.0), (0.0, 0.8))
#: The other windows are judged only where the first gives "not a digit" at least this: below
#: every threshold set so far (0.5-0.8), so no flag changes, and the check costs 1.3x a
#: single reading, not 3x, on MNIST-like digits (2.2x on real cheque digits; docs/LOG.md).
CUT_FROM = 0.1
#: Part of each calibration's key (:func:`calibration_key`): a threshold set while scans were
#: judged another way is set again, not used.
JUDGING = 2


def central(ink: torch.Tensor, gap: int = GAP) -> torch.Tensor:
    """(N, H, W) ink masks kept only within the run of inked columns and rows around the
    scan's centre: a run ends at ``gap`` or more empty columns (rows). A crop of a written
    amount holds pieces of its neighbours at the edges; they are not the digit's shape."""
    keep = torch.ones_like(ink)
    for axis in (2, 1):  # columns, then rows within what the columns kept
        profile = (ink & keep).any(dim=3 - axis).numpy()  # (N, W) or (N, H)
        size = profile.shape[1]
        mask = np.zeros_like(profile)
        for i, inked in enumerate(profile):
            where = np.flatnonzero(inked)
            if len(where) == 0:
                mask[i] = True
                continue
            start = int(where[np.argmin(np.abs(where - (size - 1) / 2))])  # the ink nearest the centre
            lo = hi = start
            while lo > 0 and inked[max(0, lo - gap):lo].any():
                lo -= 1
            while hi < size - 1 and inked[hi + 1:hi + 1 + gap].any():
                hi += 1
            mask[i, lo:hi + 1] = True
        shaped = torch.from_numpy(mask)
        keep &= shaped[:, None, :] if axis == 2 else shaped[:, :, None]
    return ink & keep


def frame(images: torch.Tensor, *, neighbours: bool = False) -> torch.Tensor:
    """(N, H, W) scans, ink on paper 0, in MNIST's framing: (N, 28, 28), the ink's peak at 1
    (a model with tone headroom leaves its ink below 1). A scan is judged without the pieces
    of neighbours at its edges (:func:`central`); training shapes, drawn whole, keep all their
    ink (``neighbours=True``). A blank scan stays blank."""
    n, h, w = images.shape
    x = images.float()
    peak = x.amax(dim=(1, 2), keepdim=True)
    ink = (x > INK * peak) & (peak > 0)
    if not neighbours:
        ink = central(ink)
        x = x * F.max_pool2d(ink[:, None].float(), 3, stride=1, padding=1)[:, 0]  # a stroke's faint edge stays
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(n, h, w)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(n, h, w)
    far = float(h + w)
    height = ys.masked_fill(~ink, -far).amax(dim=(1, 2)) - ys.masked_fill(~ink, far).amin(dim=(1, 2)) + 1
    width = xs.masked_fill(~ink, -far).amax(dim=(1, 2)) - xs.masked_fill(~ink, far).amin(dim=(1, 2)) + 1
    blank = ~ink.any(dim=(1, 2))
    side = torch.maximum(height, width).masked_fill(blank, float(max(h, w)))
    weight = x * ink
    mass = weight.sum(dim=(1, 2)).clamp_min(1e-6)
    cy = ((weight * ys).sum(dim=(1, 2)) / mass).masked_fill(blank, (h - 1) / 2)
    cx = ((weight * xs).sum(dim=(1, 2)) / mass).masked_fill(blank, (w - 1) / 2)
    x = x / peak.clamp_min(1e-6)  # ink at 1 whatever the model's headroom left it at
    step = side / BOX  # scan pixels per framed pixel
    # affine_grid maps the output's [-1, 1] to the input's [-1, 1] (pixel edges, align_corners=False).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = step * SIDE / w, (2 * cx + 1) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = step * SIDE / h, (2 * cy + 1) / h - 1
    grid = F.affine_grid(theta, [n, 1, SIDE, SIDE], align_corners=False)
    return F.grid_sample(x[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


class ShapeNet(nn.Module):
    """A small classifier of framed scans: logits of the ten digits and of "not a digit"."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, NOT_A_DIGIT + 1))
        self.register_buffer("threshold", torch.tensor(1.0))  # set after training, kept in the state dict

    def forward(self, framed: torch.Tensor) -> torch.Tensor:
        """Logits of (N, 28, 28) framed scans: (N, 11)."""
        return self.layers(framed[:, None].contiguous(memory_format=torch.channels_last))

    def scores(self, framed: torch.Tensor) -> torch.Tensor:
        """The probability of "not a digit" for each framed scan."""
        return torch.softmax(self(framed).float(), dim=1)[:, NOT_A_DIGIT]


class ShapeModel:
    """A trained :class:`ShapeNet` and where it came from."""

    def __init__(self, net: ShapeNet, metadata: dict[str, Any]) -> None:
        self.net, self.metadata = net.eval().to(memory_format=torch.channels_last), metadata

    @property
    def threshold(self) -> float:
        """The score above which a scan is flagged: set for the cleaning model this shape
        model was last calibrated for (:meth:`for_model`), else on held-out digits."""
        return float(self.net.threshold)

    def calibrated_for(self, model_id: str) -> float | None:
        """The threshold measured on this cleaning model's outputs, judged as scans are judged
        now (:data:`JUDGING`), if it was."""
        value = self.metadata.get("calibrated", {}).get(calibration_key(model_id))
        return None if value is None else float(value)

    def for_model(self, model_id: str, parent: str | None = None) -> ShapeModel:
        """This shape model with the threshold calibrated for ``model_id``, else for its
        ``parent`` (a model adapted to a folder flags at its parent's threshold), else itself."""
        value = self.calibrated_for(model_id)
        if value is None and parent:
            value = self.calibrated_for(parent)
        if value is None:
            return self
        net = ShapeNet()
        net.load_state_dict(self.net.state_dict())
        net.threshold.fill_(value)
        return ShapeModel(net, self.metadata)

    def scores(self, outputs: list[np.ndarray] | np.ndarray, batch: int = 512,
               precision: Precision = FP32) -> np.ndarray:
        """Each scan's score (NaN for a scan larger than :data:`MAX_SIDE`: not judged).
        ``outputs``: (H, W) scans in the model's look; ``precision``: the CPU's, as the
        cleaning model's (bf16 with channels-last ran 5x as fast as float32 here)."""
        return self.read(outputs, batch, precision)[0]

    def read(self, outputs: list[np.ndarray] | np.ndarray, batch: int = 512,
             precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each scan's score (as :meth:`scores`), the digit it reads as and the model's
        probability for that digit (-1 and NaN for a scan not judged)."""
        score = np.full(len(outputs), np.nan)
        digit, digit_p = np.full(len(outputs), -1), np.full(len(outputs), np.nan)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, o in enumerate(outputs):
            if max(np.shape(o)) <= MAX_SIDE:
                by_shape.setdefault(np.shape(o), []).append(i)
        with torch.inference_mode(), autocast("cpu", precision):
            for indices in by_shape.values():
                for start in range(0, len(indices), batch):
                    part = indices[start : start + batch]
                    stack = torch.from_numpy(np.stack([np.asarray(outputs[i], np.float32) for i in part]))
                    probs = self._most_digit_like(stack)
                    score[part] = probs[:, NOT_A_DIGIT].numpy()
                    top, which = probs[:, :NOT_A_DIGIT].max(dim=1)
                    digit[part], digit_p[part] = which.numpy(), top.numpy()
        return score, digit, digit_p

    def _most_digit_like(self, stack: torch.Tensor) -> torch.Tensor:
        """(N, 11) probabilities of (N, H, W) scans, each from the window of :data:`WINDOWS`
        where "not a digit" is least likely; a scan the first window already reads as a digit
        (:data:`CUT_FROM`) is read there alone."""
        width = stack.shape[-1]
        cols = torch.arange(width).view(1, 1, width)

        def read(scans: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
            inside = (cols >= round(window[0] * width)) & (cols < round(window[1] * width))
            return torch.softmax(self.net(frame(scans * inside)).float(), dim=1).double()

        best = read(stack, WINDOWS[0])
        doubtful = torch.nonzero(best[:, NOT_A_DIGIT] >= CUT_FROM)[:, 0]
        for window in WINDOWS[1:] if len(doubtful) else ():
            probs = read(stack[doubtful], window)
            better = probs[:, NOT_A_DIGIT] < best[doubtful, NOT_A_DIGIT]
            best[doubtful[better]] = probs[better]
        return best

    def unlike(self, outputs: list[np.ndarray] | np.ndarray, precision: Precision = FP32) -> np.ndarray:
        """True for each scan whose shape is unlike any digit's."""
        return self.scores(outputs, precision=precision) > self.threshold


def shapes_id(train_digest: str) -> str:
    """The stored id of the shape model trained on digits with this digest."""
    return f"digit-shapes-v{VERSION}-{train_digest[:12]}"


def save_shapes(model: ShapeModel, models_dir: str | os.PathLike[str], model_id: str) -> Path:
    """Write ``models_dir/shapes/<model_id>.pt`` (a state dict) then its ``.json``, each atomically."""
    weights = Path(models_dir) / FOLDER / f"{model_id}.pt"
    return save_weights(model.net, weights, {"model_id": model_id, **model.metadata})


def find_shapes(models_dir: str | os.PathLike[str]) -> Path | None:
    """The weights of the newest complete shape model of this version in the store, or None."""
    folder = Path(models_dir) / FOLDER
    if not folder.is_dir():
        return None
    found = [p.with_suffix(".pt") for p in folder.glob(f"digit-shapes-v{VERSION}-*.json")
             if p.with_suffix(".pt").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_shapes(weights: str | os.PathLike[str]) -> ShapeModel:
    """The shape model stored at ``weights`` (read with ``weights_only=True``: no pickled
    code runs)."""
    net = ShapeNet()
    return ShapeModel(net, load_weights(net, weights, "a digit-shape model"))


def calibration_key(model_id: str) -> str:
    """Where the threshold for cleaning model ``model_id`` is kept in the metadata's
    ``calibrated``: the model and the way scans are judged (:data:`JUDGING`)."""
    return f"{model_id}#judged-{JUDGING}"


def record_calibration(weights: str | os.PathLike[str], model_id: str, threshold: float) -> None:
    """Keep the threshold measured for cleaning model ``model_id`` in the shape model's
    metadata (rewritten atomically)."""
    meta_path = Path(weights).with_suffix(".json")
    metadata = read_json(meta_path)
    metadata.setdefault("calibrated", {})[calibration_key(model_id)] = threshold
    write_json(meta_path, metadata)
