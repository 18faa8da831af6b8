"""The score a model is promoted on (``denoiser models promote``): its mean PSNR over a fixed
set of test digits, with the scan kinds for ``clean`` or the tutorial's noise for ``run``,
computed by :mod:`denoiser.evaluation.evaluate` and cached by model, use, limit and seed."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from denoiser.choices import DEFAULT_MODELS_DIR
from denoiser.evaluation.evaluate import SCORE_VERSION, prepare, score_model
from denoiser.files import read_json, write_json

SCORES_FILE = "scores.json"


def cached_use_scores(out_dir: str | os.PathLike[str]) -> dict[tuple[str, str], float]:
    """``{(model, use): score}`` of the scores :func:`use_score` has cached in ``out_dir``
    at this score version (the last computed, where several limits or seeds were)."""
    cache = Path(out_dir) / SCORES_FILE
    found = {}
    for key, value in (read_json(cache) if cache.is_file() else {}).items():
        model, use, *_, version = key.split("|")
        if version == str(SCORE_VERSION):
            found[(model, use)] = float(value)
    return found


def use_score(out_dir: str | os.PathLike[str], model: str, use: str, *, data_dir: str | None = None,
              dataset: str = "mnist", models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
              limit: int = 500, seed: int = 0, device: str = "auto") -> float:
    """The number that decides promotion for ``use``: the mean PSNR (dB) of ``model`` over
    the first ``limit`` test digits rendered as every scan kind (``clean``), or with the
    tutorial's noise (``run``). Cached in ``out_dir`` by model, use, limit and seed."""
    cache = Path(out_dir) / SCORES_FILE
    key = f"{model}|{use}|{limit}|{seed}|{SCORE_VERSION}"
    scores = read_json(cache) if cache.is_file() else {}
    if key not in scores:
        work = Path(out_dir) / f"{use}-{limit}-{seed}"
        prepared = (read_json(work / "prepared.json") if (work / "prepared.json").is_file() else
                    prepare(work, data_dir=data_dir, dataset=dataset, scans=use == "clean", limit=limit,
                            seed=seed, tune_images=1))
        rows = pd.read_parquet(score_model(work, prepared, model, models_dir=models_dir, device=device,
                                           precision="fp32"))  # comparable on every machine
        scores = read_json(cache) if cache.is_file() else {}
        scores[key] = float(rows.groupby("noise")["psnr"].mean().mean())
        write_json(cache, scores)
    return float(scores[key])
