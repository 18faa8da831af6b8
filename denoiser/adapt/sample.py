"""A folder's scans read for adaptation: a seeded sample of its images in the model's look,
and a digest of the whole folder (its file list and contents) that names what was seen.

Files are read as ``clean`` reads them (:func:`denoiser.folders.steps.fetch`, any format,
mode, size and polarity); a file that cannot be read is counted and left out.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from denoiser.adapt.composite import CROP
from denoiser.choices import SAMPLE_IMAGES
from denoiser.files import atomic_path
from denoiser.folders.read import read_image, scan_folder
from denoiser.folders.safe_read import MAX_FILE_MB
from denoiser.folders.steps import fetch
from denoiser.scans.restore import prepare

#: A scan larger than this in the model's look is cut to a crop of this size around its
#: centre: adaptation trains on 28x28 crops, and a sample of 5,000 full pages would not fit.
KEEP = 112
MIN_IMAGES = 10  # readable images a folder needs before it can be adapted to


@dataclass(frozen=True)
class FolderSample:
    folder: str  # the folder's absolute path
    inputs: list[np.ndarray]  # float (H, W) in the model's look
    paths: list[str]  # relative paths of the sampled files that were read
    files: int  # image files in the folder
    unreadable: int  # sampled files that could not be read
    digest: str  # sha256 over the sorted (path, content sha256) of every file
    contrasts: list[float] = field(default_factory=list)  # each input's ink - paper on the scan (1.0: unknown)
    scales: list[float] = field(default_factory=list)  # each input's ScanInfo.shrink


def _centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    top, left = max(0, (h - KEEP) // 2), max(0, (w - KEEP) // 2)
    return np.ascontiguousarray(image[top : top + KEEP, left : left + KEEP])


def sample_folder(in_dir: str | os.PathLike[str], *, headroom: float, max_images: int = SAMPLE_IMAGES, seed: int = 0,
                  max_file_mb: float = MAX_FILE_MB, digest: bool = True) -> FolderSample:
    """Up to ``max_images`` images of ``in_dir`` (a seeded random choice), read and prepared.
    The digest reads every file; ``digest=False`` reads only the sample (digest "")."""
    entries = [e for e in scan_folder(in_dir) if not e.skip]
    if not entries:
        raise ValueError(f"{in_dir} holds no image files to adapt on")
    max_bytes = int(max_file_mb * 10**6)
    chosen = set(np.random.default_rng(seed).permutation(len(entries))[:max_images].tolist())
    folder_hash = hashlib.sha256()
    inputs, paths, contrasts, scales, unreadable = [], [], [], [], 0
    for index, entry in enumerate(entries):
        if index not in chosen and not digest:
            continue
        try:
            content, file_hash = fetch(entry, in_dir, max_bytes)
        except (OSError, ValueError):
            file_hash, content = "unreadable", None
        folder_hash.update(f"{entry.rel}\0{file_hash}\n".encode("utf-8", "surrogateescape"))
        if index not in chosen:
            continue
        try:
            if content is None:
                raise ValueError("unreadable")
            mapped, info = prepare(read_image(entry.path, content).pixels, headroom=headroom)
        except Exception:  # noqa: BLE001 - any bad file is counted and left out, as clean does
            unreadable += 1
            continue
        inputs.append(_centre(mapped))
        paths.append(entry.rel)
        contrasts.append(float(info.ink - info.paper))
        scales.append(info.shrink)
    return FolderSample(os.path.abspath(in_dir), inputs, paths, len(entries), unreadable,
                        folder_hash.hexdigest() if digest else "", contrasts, scales)


def save_sample(sample: FolderSample, path: str | os.PathLike[str]) -> Path:
    """The sample as one ``.npz`` (images and what was counted), written atomically."""
    meta = {"folder": sample.folder, "paths": sample.paths, "files": sample.files,
            "unreadable": sample.unreadable, "digest": sample.digest, "contrasts": sample.contrasts,
            "scales": sample.scales}
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 **{f"image_{i:06d}": image for i, image in enumerate(sample.inputs)})
    return Path(path)


def take_sample(in_dir: str | os.PathLike[str], path: str | os.PathLike[str], *, headroom: float,
                max_images: int = SAMPLE_IMAGES, seed: int = 0) -> FolderSample:
    """:func:`sample_folder` saved at ``path`` (:func:`save_sample`), for the adapt stage.
    Raises ValueError (one line) where fewer than :data:`MIN_IMAGES` images could be read."""
    taken = sample_folder(in_dir, headroom=headroom, max_images=max_images, seed=seed)
    if len(taken.inputs) < MIN_IMAGES:
        raise ValueError(f"{in_dir}: only {len(taken.inputs)} readable images; adapting needs at least {MIN_IMAGES}")
    save_sample(taken, path)
    return taken


def load_sample(path: str | os.PathLike[str]) -> FolderSample:
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(stored["meta"].tobytes())
        inputs = [stored[name] for name in sorted(stored.files) if name.startswith("image_")]
    return FolderSample(meta["folder"], inputs, meta["paths"], meta["files"], meta["unreadable"],
                        meta["digest"], meta.get("contrasts") or [1.0] * len(inputs),
                        meta.get("scales") or [1.0] * len(inputs))


def centre_crops(inputs: list[np.ndarray]) -> torch.Tensor:
    """The centre CROP x CROP of each model input (padded with paper where smaller)."""
    out = np.zeros((len(inputs), 1, CROP, CROP), dtype=np.float32)
    for i, image in enumerate(inputs):
        h, w = image.shape
        top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
        piece = image[top : top + CROP, left : left + CROP]
        out[i, 0, : piece.shape[0], : piece.shape[1]] = piece
    return torch.from_numpy(out)
