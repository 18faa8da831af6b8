"""Cleaning real scans with a model trained on MNIST's look: tones and scale around it.

For each scan (float gray (H, W) in [0, 1], any size, either polarity):

1. estimate its paper and ink levels and map it to MNIST's look, paper 0 and ink 1
   (:mod:`denoiser.scans.tones`; a dark-on-light scan is flipped by the same map);
2. estimate its stroke width (:mod:`denoiser.scans.strokes`; at most what the image's size
   allows a digit); a scan whose strokes are at least :data:`RESCALE_ABOVE` times MNIST's
   is shrunk to MNIST's stroke width;
3. denoise (batched by size, tiled when large: :func:`denoiser.models.infer.denoise_images`);
4. enlarge the result back to the scan's size, and map it back: to the scan's own paper
   and ink (``tones="keep"``), or to pure paper and full-contrast ink in the scan's
   polarity (``tones="normalize"``).

Why shrink rather than train at every scale: a model that sees 4x strokes needs a 4x
receptive field and 16x the pixels per training image, which a 15-minute CPU budget cannot
buy; shrinking also averages the noise down before the model sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.checks.quality import photo_tones
from denoiser.choices import TONES
from denoiser.data.arrays import by_shape
from denoiser.models.infer import denoise, denoise_images
from denoiser.models.precision import FP32, Precision
from denoiser.scans import strokes, tones
from denoiser.scans.strokes import SHRINK_ABOVE

#: Scans whose strokes are this many times MNIST's width or more are shrunk to it (the
#: scan recipe trains on the same rule).
RESCALE_ABOVE = SHRINK_ABOVE
#: MNIST's digits fill a 20x20 box: a digit at scale s needs 20 s pixels, so an image's
#: scale is at most its shorter side / 20 (a 28x28 digit is never shrunk, however noisy).
DIGIT_BOX = 20


@dataclass(frozen=True)
class ScanInfo:
    """What the cleaner measured on one scan."""

    paper: float
    ink: float  # where the model's 1 maps to: the measured ink moved out by ``headroom``
    scale: float  # stroke width / MNIST's
    resized: bool
    headroom: float = 1.0

    @property
    def inverted(self) -> bool:
        """Dark ink on light paper (the model sees it flipped)."""
        return self.ink < self.paper

    @property
    def shrink(self) -> float:
        """How much the cleaner shrank the scan: its scale where resized, else 1."""
        return float(self.scale) if self.resized else 1.0


def model_headroom(metadata: dict) -> float:
    """The tone headroom a stored model was trained with (1: none, the MNIST-only models)."""
    return float(metadata.get("tone_headroom", 1.0))


def tone_mapped(metadata: dict) -> bool:
    """Whether a stored model was trained on tone-mapped scans (``--noise scan``)."""
    return "tone_headroom" in metadata


def apply_model(metadata: dict, model: torch.nn.Module, images: np.ndarray, *, as_scans: bool,
                device: torch.device | str = "cpu", batch_size: int | None = None,
                precision: Precision = FP32) -> np.ndarray:
    """A stored model's outputs for (N, H, W) images: through the tone and scale handling
    of :func:`restore` for scans and for models trained on tone-mapped input, else straight
    through the network (the MNIST-only models on MNIST, as they were trained)."""
    if as_scans or tone_mapped(metadata):
        outputs, _ = restore(model, list(images), headroom=model_headroom(metadata),
                             batch_size=batch_size, device=device, precision=precision)
        return np.stack(outputs)
    return denoise(model, images, batch_size=batch_size, device=device, precision=precision)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    shrinking = size[0] < image.shape[0]
    out = F.interpolate(t, size=size, mode="area") if shrinking else \
        F.interpolate(t, size=size, mode="bicubic", align_corners=False)
    return out[0, 0].clamp(0, 1).numpy()


def prepare(image: np.ndarray, *, headroom: float = tones.HEADROOM,
            rescale: bool = True) -> tuple[np.ndarray, ScanInfo]:
    """One scan in the model's look (shrunk when its strokes are wide), and what was measured."""
    return prepare_many([image], headroom=headroom, rescale=rescale)[0]


def prepare_many(images: list[np.ndarray], *, headroom: float = tones.HEADROOM, rescale: bool = True,
                 dark_ink: list[bool] | None = None) -> list[tuple[np.ndarray, ScanInfo]]:
    """:func:`prepare` for each of ``images``; scans of one size are measured together, in
    vectorized passes, with the same results as one at a time. ``dark_ink``, where given,
    sets each scan's polarity instead of measuring it."""
    prepared: list[tuple[np.ndarray, ScanInfo] | None] = [None] * len(images)
    for shape, indices in by_shape(images).items():
        pixels = torch.from_numpy(np.stack([np.asarray(images[i], dtype=np.float32) for i in indices]))
        polarity = None if dark_ink is None else torch.tensor([bool(dark_ink[i]) for i in indices])
        paper, ink = tones.estimate_levels(pixels, headroom=headroom, dark_ink=polarity)
        mapped = tones.to_model(pixels, paper, ink).numpy()
        scales = (np.minimum(strokes.stroke_widths(mapped) / strokes.MNIST_STROKE_WIDTH, min(shape) / DIGIT_BOX)
                  if rescale else np.ones(len(indices)))
        for k, i in enumerate(indices):
            scale, one = float(scales[k]), mapped[k]
            resized = scale >= RESCALE_ABOVE
            if resized:
                one = _resize(one, (max(8, round(shape[0] / scale)), max(8, round(shape[1] / scale))))
            prepared[i] = (one, ScanInfo(float(paper[k]), float(ink[k]), scale, resized, headroom))
    return prepared  # type: ignore[return-value]


def in_model_look(truths: list[np.ndarray], scans: list[np.ndarray], headroom: float,
                  rescale: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, truths) of scans (any sizes) with their clean truths, for training and scoring
    in the model's look: each scan prepared as the cleaner prepares it (:func:`prepare_many`),
    its truth mapped by the tones, and shrunk by the scale, measured on the scan."""
    inputs, targets = [], []
    for (scan, info), truth in zip(prepare_many(list(scans), headroom=headroom, rescale=rescale), truths,
                                   strict=True):
        level = lambda v: torch.tensor(float(v)).view(1, 1, 1)  # noqa: E731
        target = tones.to_model(torch.from_numpy(np.asarray(truth, np.float32))[None], level(info.paper),
                                level(info.ink))[0].clamp(0, 1).numpy()
        inputs.append(scan)
        targets.append(_resize(target, scan.shape) if target.shape != scan.shape else target)
    return inputs, targets


#: An output with less than this share of its pixels inked (above half the model's ink
#: level) lost its digit: cleaned again with the opposite polarity. A digit in MNIST's
#: framing inks 10-20% of its pixels.
BLANK_INK = 0.005
#: The retry is kept where its output inks at least this share of its pixels.
RETRY_INK = 0.02
#: Scans larger than this a side in the model's scale are pages, never retried.
RETRY_MAX_SIDE = 2 * 28


def ink_share(output: np.ndarray) -> float:
    """The share of an output's pixels inked (in the model's look, ink 1)."""
    return float(np.mean(np.asarray(output) > 0.5))


def retry_blank(model: torch.nn.Module, images: list[np.ndarray], prepared: list[tuple[np.ndarray, ScanInfo]],
                outputs: list[np.ndarray], *, headroom: float, **options) -> list[int]:
    """Where a digit-sized scan's output came out blank, clean it again with the opposite
    polarity, and keep that where it found ink on paper (not a photo's tones:
    :func:`denoiser.checks.quality.photo_tones`): ``prepared`` and ``outputs`` are updated
    in place, and the indices changed are returned.

    A scan's polarity is measured (:func:`denoiser.scans.tones.estimate_levels`); where a
    printed pattern or a band of paper misleads it, the model sees the paper as ink and
    the strokes as a background to remove, and gives back an empty page. Pages (over
    :data:`RETRY_MAX_SIDE` a side in the model's scale) are left as they are: a page with
    a single small digit inks fewer of its pixels than the threshold.
    """
    blank = [i for i, out in enumerate(outputs)
             if max(out.shape) <= RETRY_MAX_SIDE and ink_share(out) < BLANK_INK]
    if not blank:
        return []
    flipped = prepare_many([images[i] for i in blank], headroom=headroom,
                           dark_ink=[not prepared[i][1].inverted for i in blank])
    again = denoise_images(model, [m for m, _ in flipped], **options)
    kept = []
    for i, redone, out in zip(blank, flipped, again, strict=True):
        if ink_share(out) >= RETRY_INK and not photo_tones(out[None])[0]:
            prepared[i], outputs[i] = redone, out
            kept.append(i)
    return kept


def finish(output: np.ndarray, info: ScanInfo, shape: tuple[int, int], *, tone: str = "keep") -> np.ndarray:
    """A model output back at the scan's size and tones."""
    return finish_many([output], [info], [shape], tone=tone)[0]


def finish_many(outputs: list[np.ndarray], infos: list[ScanInfo], shapes: list[tuple[int, int]], *,
                tone: str = "keep") -> list[np.ndarray]:
    """:func:`finish` for each output; outputs of one size are mapped back together."""
    if tone not in TONES:
        raise ValueError(f"unknown tones {tone!r}; choose one of {', '.join(TONES)}")
    sized = [out if out.shape == tuple(shape) else np.clip(_resize(out, tuple(shape)), 0.0, 1.0)
             for out, shape in zip(outputs, shapes, strict=True)]
    finished: list[np.ndarray | None] = [None] * len(sized)
    for indices in by_shape(sized).values():
        y = torch.from_numpy(np.stack([sized[i] for i in indices]) if len(indices) > 1 else sized[indices[0]][None])
        paper = torch.tensor([infos[i].paper for i in indices]).view(-1, 1, 1)
        ink = torch.tensor([infos[i].ink for i in indices]).view(-1, 1, 1)
        if tone == "keep":
            back = tones.from_model(y, paper, ink)
        else:
            headroom = torch.tensor([infos[i].headroom for i in indices]).view(-1, 1, 1)
            back = tones.normalized((y * headroom).clamp(0, 1), paper, ink)
        for k, i in enumerate(indices):
            finished[i] = back[k].numpy().astype(np.float32, copy=False)
    return finished  # type: ignore[return-value]


def restore(model: torch.nn.Module, images: list[np.ndarray], *, tone: str = "keep",
            headroom: float = tones.HEADROOM, rescale: bool = True, batch_size: int | None = None,
            device: torch.device | str = "cpu", tile: int = 256, overlap: int = 32,
            precision: Precision = FP32) -> tuple[list[np.ndarray], list[ScanInfo]]:
    """Clean float (H, W) scans in [0, 1] of any sizes; the outputs and what was measured."""
    if tone not in TONES:
        raise ValueError(f"unknown tones {tone!r}; choose one of {', '.join(TONES)}")
    prepared = prepare_many(images, headroom=headroom, rescale=rescale)
    options = dict(batch_size=batch_size, device=device, tile=tile, overlap=overlap, precision=precision)
    outputs = denoise_images(model, [p[0] for p in prepared], **options)
    if rescale:
        retry_blank(model, images, prepared, outputs, headroom=headroom, **options)
    cleaned = finish_many(outputs, [info for _, info in prepared], [image.shape for image in images], tone=tone)
    return cleaned, [info for _, info in prepared]
