"""Cleaning judged on real scans that have no clean copy: ``denoiser evaluate --real DIR``.

A folder of labelled digit scans (``labels.json``, ``{"relative/path.png": digit}``, or
sub-folders named ``0`` to ``9``) is cleaned by each method (the scans as they are, a 3x3
median, a Gaussian blur of sigma 1, and each model as ``denoiser clean`` cleans, 8-bit as it
writes), and every output is read by the digit reader (:mod:`denoiser.evaluation.recognizer`),
which nothing that cleans, adapts or gates uses. A method scores the share of digits read
correctly, with a bootstrap interval (the same resamples for every method, so differences
are paired), and the same per digit class.

    found = labelled_scans("cheques/")
    summary = score_real(found, "out/", methods, reader)      # real.parquet, summary.json, two sheets
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from denoiser.files import write_json, write_parquet
from denoiser.folders.read import IMAGE_SUFFIXES, read_image
from denoiser.folders.safe_read import read_input

BOOTSTRAP = 1000  # resamples of the images for each interval
SAMPLE = 16  # scans on the contact sheet (a fixed, seeded sample)


@dataclass(frozen=True)
class Labelled:
    """A folder's labelled scans: relative paths, gray pixels, digits."""

    folder: str
    paths: list[str]
    images: list[np.ndarray]
    labels: np.ndarray
    unreadable: dict[str, str]  # path -> why


def check_labels(folder: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """The folder's (relative path, digit) pairs, sorted by path, from ``labels.json`` or
    from sub-folders ``0``-``9``. Raises FileNotFoundError or ValueError (one line) for a
    folder without labels or with a label that is not a digit."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    labels_file = root / "labels.json"
    if labels_file.is_file():
        try:
            found = json.loads(labels_file.read_text())
        except ValueError as error:
            raise ValueError(f"{labels_file} is not valid JSON ({error})") from None
        if not isinstance(found, dict):
            raise ValueError(f"{labels_file} must map each image's path to its digit")
        index: dict[str, list[str]] = {}
        pairs = sorted((_locate(root, str(name), index), label) for name, label in found.items())
    else:
        pairs = sorted((p.relative_to(root).as_posix(), int(p.parent.name)) for p in root.glob("[0-9]/*")
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not pairs:
            raise ValueError(f"{folder}: no labels.json and no sub-folders 0-9 holding images")
    bad = [(path, label) for path, label in pairs if not (isinstance(label, int) and 0 <= label <= 9)]
    if bad:
        raise ValueError(f"{labels_file}: the label of {bad[0][0]} is {bad[0][1]!r}, not a digit 0-9")
    return pairs


def _locate(root: Path, name: str, index: dict[str, list[str]]) -> str:
    """A label's key as a path under ``root``: as it stands, else the one image file of that
    name anywhere below (``labels.json`` beside an ``images/`` folder names bare files).
    ``index`` (file name -> paths) is filled on first need, once per call of :func:`check_labels`."""
    if (root / name).is_file():
        return name
    if "" not in index:  # "" marks the folder as walked (no file has an empty name)
        index[""] = []
        for path in root.rglob("*"):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.name, []).append(path.relative_to(root).as_posix())
    found = index.get(Path(name).name, [])
    return found[0] if len(found) == 1 else name


def labelled_scans(folder: str | os.PathLike[str], limit: int | None = None) -> Labelled:
    """The labelled scans of ``folder`` (:func:`check_labels`), read as ``clean`` reads them;
    a file that cannot be read is counted, and left out."""
    root = Path(folder)
    paths, images, labels, unreadable = [], [], [], {}
    for path, label in check_labels(folder)[:limit]:
        try:
            image = read_image(root / path, read_input(root, root / path))
        except ValueError as error:
            unreadable[path] = str(error)
            continue
        paths.append(path)
        images.append(image.pixels)
        labels.append(label)
    return Labelled(str(root), paths, images, np.asarray(labels, dtype=np.int64), unreadable)


# The two classical filters in torch, not the scipy ones of :mod:`denoiser.evaluation.baselines`:
# those need the optional ``[baselines]`` extra, and ``evaluate --real`` runs on the core install.
def median3(images: list[np.ndarray]) -> list[np.ndarray]:
    """A 3x3 median filter (edges reflected)."""
    out = []
    for image in images:
        t = F.pad(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None], (1, 1, 1, 1), mode="reflect")
        out.append(F.unfold(t, 3).median(dim=1).values.view(image.shape).numpy())
    return out


def gaussian1(images: list[np.ndarray]) -> list[np.ndarray]:
    """A Gaussian blur of sigma 1 (7 taps, edges reflected)."""
    taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    taps = (taps / taps.sum()).view(1, 1, 1, 7)
    out = []
    for image in images:
        t = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
        t = F.conv2d(F.pad(t, (3, 3, 0, 0), mode="reflect"), taps)
        t = F.conv2d(F.pad(t, (0, 0, 3, 3), mode="reflect"), taps.transpose(2, 3))
        out.append(t[0, 0].numpy())
    return out


Method = Callable[[list[np.ndarray]], list[np.ndarray]]
CLASSICAL: dict[str, Method] = {"input": list, "median 3x3": median3, "gaussian 1": gaussian1}


def as_written(images: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs as an 8-bit file holds them."""
    return [np.round(np.clip(im, 0, 1) * 255) / 255 for im in images]


def score_real(found: Labelled, out_dir: str | os.PathLike[str], methods: dict[str, Method], reader: Any, *,
               seed: int = 0, compare_to: str | None = None) -> dict[str, Any]:
    """Each method's outputs read by ``reader``; writes ``real.parquet`` (one row per scan and
    method), ``summary.json`` and two contact sheets into ``out_dir``; the summary."""
    out = Path(out_dir)
    outputs, reads, rows = {}, {}, []
    for name, method in methods.items():
        outputs[name] = as_written(method(found.images))
        digits, confidence = reader.read(outputs[name])
        reads[name] = digits
        rows.append(pd.DataFrame({"path": found.paths, "label": found.labels, "method": name, "read": digits,
                                  "confidence": confidence, "correct": digits == found.labels}))
    frame = pd.concat(rows, ignore_index=True)
    write_parquet(frame, out / "real.parquet")
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(found.labels), size=(BOOTSTRAP, len(found.labels)))
    correct = {name: (reads[name] == found.labels) for name in methods}
    baseline = compare_to or next(iter(methods))
    summary = {"folder": found.folder, "images": len(found.labels), "unreadable": len(found.unreadable),
               "compared_to": baseline, "methods": []}
    for name in methods:
        hits = correct[name].astype(np.float64)
        boot = hits[resamples].mean(axis=1)
        gain = (hits - correct[baseline])[resamples].mean(axis=1)
        per_class = {str(d): round(float(hits[found.labels == d].mean()), 4) for d in range(10)
                     if (found.labels == d).any()}
        summary["methods"].append({
            "method": name, "accuracy": round(float(hits.mean()), 4),
            "low": round(float(np.percentile(boot, 2.5)), 4), "high": round(float(np.percentile(boot, 97.5)), 4),
            "gain": round(float(hits.mean() - correct[baseline].mean()), 4),
            "gain_low": round(float(np.percentile(gain, 2.5)), 4),
            "gain_high": round(float(np.percentile(gain, 97.5)), 4), "per_class": per_class})
    write_json(out / "summary.json", summary)
    sample = sorted(np.random.default_rng(seed).choice(len(found.paths), min(SAMPLE, len(found.paths)),
                                                        replace=False))
    contact_sheet(out / "sheet-sample.png", found, outputs, reads, list(sample))
    names = list(methods)
    if len(names) > 1:
        last = names[-1]
        changed = [i for i in range(len(found.paths)) if reads[names[0]][i] != reads[last][i]]
        contact_sheet(out / "sheet-changed.png", found, {k: outputs[k] for k in (names[0], last)},
                      reads, changed[:SAMPLE])
    return summary


def contact_sheet(path: Path, found: Labelled, outputs: dict[str, list[np.ndarray]], reads: dict[str, np.ndarray],
                  picks: list[int], tile: int = 72) -> None:
    """A PNG: one row per method, one column per picked scan, each tile with what the reader
    read (green where right, red where wrong); the labels above."""
    if not picks:
        return
    gap, top, left = 4, 16, 110
    sheet = Image.new("RGB", (left + len(picks) * (tile + gap), top + len(outputs) * (tile + gap + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, i in enumerate(picks):
        draw.text((left + c * (tile + gap) + tile // 2 - 3, 2), str(found.labels[i]), fill=(0, 0, 0))
    for r, (name, images) in enumerate(outputs.items()):
        y = top + r * (tile + gap + 12)
        draw.text((4, y + tile // 2), name[:16], fill=(0, 0, 0))
        for c, i in enumerate(picks):
            x = left + c * (tile + gap)
            gray = Image.fromarray(np.round(np.clip(images[i], 0, 1) * 255).astype(np.uint8), "L")
            sheet.paste(gray.resize((tile, tile), Image.Resampling.BILINEAR).convert("RGB"), (x, y))
            right = reads[name][i] == found.labels[i]
            draw.text((x + tile // 2 - 3, y + tile), str(reads[name][i]), fill=(0, 140, 0) if right else (200, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")


def format_real(summary: dict[str, Any]) -> str:
    """The summary as a table: accuracy with its 95% interval, the paired gain, per class."""
    lines = [f"{summary['images']} labelled scans in {summary['folder']} ({summary['unreadable']} unreadable); "
             f"gains against '{summary['compared_to']}', 95% bootstrap intervals",
             f"{'method':<28} {'read correctly':>22} {'gain (points)':>20}  per digit 0-9"]
    for m in summary["methods"]:
        classes = " ".join(f"{100 * m['per_class'].get(str(d), float('nan')):3.0f}" for d in range(10))
        lines.append(f"{m['method'][:28]:<28} {100 * m['accuracy']:6.1f}% ({100 * m['low']:4.1f}-{100 * m['high']:4.1f})"
                     f" {100 * m['gain']:+6.1f} ({100 * m['gain_low']:+.1f}, {100 * m['gain_high']:+.1f})  {classes}")
    return "\n".join(lines)


def model_method(choice: Any, *, tones: str = "keep", device: str = "auto", chunk: int = 512) -> Method:
    """A method cleaning as ``denoiser clean`` does with ``choice`` (a
    :class:`denoiser.folders.model_choice.ModelChoice`); a scan the cleaner fails on stays
    as it is."""
    from denoiser.folders.model_choice import cached_model
    from denoiser.models.device import resolve_device
    from denoiser.scans.batch import clean_batch
    from denoiser.scans.restore import model_headroom

    device = str(resolve_device(device))  # "auto" as clean resolves it

    def clean(images: list[np.ndarray]) -> list[np.ndarray]:
        found = choice.checkpoint()
        model = cached_model(found, device)
        out: list[np.ndarray] = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            results = clean_batch(model, part, headroom=model_headroom(found.metadata), tones=tones, device=device,
                                  precision=choice.resolved_precision)
            out += [im if isinstance(r, Exception) else r.pixels for r, im in zip(results, part, strict=True)]
        return out

    return clean
