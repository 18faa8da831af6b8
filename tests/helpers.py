"""Test data the tests make themselves: IDX files and digit-like images."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from denoiser.data import IdxDataset, IdxFile


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (type 0x08)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def draw_digits(n: int, *, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digit-like uint8 images (bright strokes on black) and labels 0-9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    for i in range(n):
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(2, 4))):
            x0, y0, x1, y1 = rng.integers(5, size - 5, size=4)
            draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=int(rng.integers(2, 4)))
        if labels[i] % 2 == 0:
            c = int(rng.integers(9, size - 9))
            draw.ellipse([c - 5, c - 6, c + 5, c + 6], outline=255, width=2)
        images[i] = np.asarray(canvas)
    return images, labels


def write_idx_dataset(folder: Path, *, n_train: int = 600, n_test: int = 100, seed: int = 0,
                      gz: bool = True) -> IdxDataset:
    """Write the four MNIST-layout files into ``folder``; return a spec with their checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = draw_digits(n_train, seed=seed)
    test_x, test_y = draw_digits(n_test, seed=seed + 1)
    specs = []
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        content = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
        specs.append(IdxFile(name, array.shape, md5=hashlib.md5(content).hexdigest()))
    return IdxDataset("synthetic", *specs)
