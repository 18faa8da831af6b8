"""The run report: per-image metrics in Parquet, a summary in JSON and a preview PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from denoiser.data.arrays import to_float
from denoiser.files import atomic_path, write_json
from denoiser.metrics import bce, mse, psnr, ssim

METRICS = ("mse", "psnr", "ssim", "bce")


def per_image_metrics(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray) -> pd.DataFrame:
    """One row per image: each metric of noisy-vs-clean and denoised-vs-clean."""
    functions = {"mse": mse, "psnr": psnr, "ssim": ssim, "bce": bce}
    columns: dict[str, np.ndarray] = {}
    for name, fn in functions.items():
        columns[f"{name}_noisy"] = fn(clean, noisy)
        columns[f"{name}_denoised"] = fn(clean, denoised)
    return pd.DataFrame(columns)


def build_report(
    *,
    run_id: str,
    clean: np.ndarray,
    noisy: np.ndarray,
    denoised: np.ndarray,
    labels: np.ndarray,
    split: str,
    noise: str,
    noise_seed: int,
    model_id: str,
) -> pd.DataFrame:
    """The report table; ``clean`` may be uint8, the others float in [0, 1]."""

    if not (len(clean) == len(noisy) == len(denoised) == len(labels)):
        raise ValueError(
            f"report inputs differ in length: clean {len(clean)}, noisy {len(noisy)}, "
            f"denoised {len(denoised)}, labels {len(labels)}"
        )
    n = len(clean)
    frame = pd.DataFrame(
        {
            "run_id": pd.Series([run_id] * n, dtype="string"),
            "image_index": np.arange(n, dtype=np.int64),
            "split": pd.Series([split] * n, dtype="string"),
            "label": labels.astype(np.int64),
            "noise": pd.Series([noise] * n, dtype="string"),
            "noise_seed": np.full(n, noise_seed, dtype=np.int64),
            "model_id": pd.Series([model_id] * n, dtype="string"),
        }
    )
    metrics = per_image_metrics(to_float(clean), noisy, denoised)
    return pd.concat([frame, metrics], axis=1)


def summarize(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """Counts, means and medians of every metric column, plus ``extra`` fields."""
    summary: dict[str, Any] = {"images": int(len(frame))}
    for name in METRICS:
        for which in ("noisy", "denoised"):
            column = frame[f"{name}_{which}"]
            finite = column[np.isfinite(column)]
            summary[f"mean_{name}_{which}"] = float(finite.mean()) if len(finite) else None
            summary[f"median_{name}_{which}"] = float(finite.median()) if len(finite) else None
    summary.update(extra)
    return summary


def write_summary(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return write_json(path, summary)


def preview_image(rows: list[np.ndarray], *, scale: int = 3, gap: int = 2) -> Image.Image:
    """A grid: one row per array of ``(k, H, W)`` images in [0, 1] (or uint8), white gaps."""

    rows = [to_float(np.asarray(r)) for r in rows]
    k, h, w = rows[0].shape
    height = len(rows) * (h * scale + gap) + gap
    width = k * (w * scale + gap) + gap
    canvas = np.full((height, width), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            tile = np.kron(np.clip(image, 0, 1), np.ones((scale, scale)))
            y, x = gap + r * (h * scale + gap), gap + c * (w * scale + gap)
            canvas[y : y + h * scale, x : x + w * scale] = np.round(tile * 255).astype(np.uint8)
    return Image.fromarray(canvas, mode="L")


def write_preview(
    path: str | os.PathLike[str],
    *,
    clean: np.ndarray,
    noisy: np.ndarray,
    denoised: np.ndarray,
    count: int = 10,
) -> Path:
    """``preview.png``: rows clean / noisy / denoised for the first ``count`` images."""
    image = preview_image([clean[:count], noisy[:count], denoised[:count]])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
