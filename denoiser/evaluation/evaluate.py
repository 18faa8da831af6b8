"""Evaluation: trained models and classical baselines scored on the same noisy test images.

    prepared = prepare(out_dir, data_dir=None, noises=["gaussian:0.5"], limit=1000)
    parts = [score_noisy(out_dir, prepared)]
    parts += [score_model(out_dir, prepared, "unet-3f2a9c1b7d4e")]
    parts += [score_baseline(out_dir, prepared, "tv")]
    summary = summarize(out_dir, parts)

Every method sees the same noisy test images (noise drawn from ``seed``). Baselines tune
their parameter on a validation split taken from the *training* images (the split the
models hold out with seed 0), with noise from another seed; the chosen value is recorded.
Each ``score_*`` writes its rows to a Parquet file of its own, so each is a stage that can
be retried alone; :func:`summarize` joins them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from denoiser.choices import DEFAULT_MODELS_DIR
from denoiser.data.arrays import to_float
from denoiser.data.datasets import DATASETS
from denoiser.data.mnist import load_dataset
from denoiser.evaluation import baselines, digits, scanset
from denoiser.files import load_array, read_json, save_array, write_json, write_parquet
from denoiser.metrics import mse, psnr, ssim
from denoiser.models import checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.networks import count_parameters
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import synthesize
from denoiser.scans import restore
from denoiser.training.loop import split_train_val

log = logging.getLogger(__name__)

DEFAULT_EVAL_DIR = Path("data") / "evaluations"
SCORE_VERSION = 1  # bump when the scan kinds or the scoring change what use_score means


def prepare(out_dir: str | os.PathLike[str], *, data_dir: str | None = None, dataset: str = "mnist",
            noises: list[str] | tuple[str, ...] = ("gaussian:0.5",), scans: bool = False,
            limit: int | None = None, seed: int = 0, tune_images: int = 300) -> dict[str, Any]:
    """Write the truth and noisy arrays of the test and validation images; returns their paths.

    ``noises`` are noise specs; with ``scans``, the kinds of :data:`denoiser.evaluation.scanset.KINDS`
    instead. Each is a label with its own truth (the clean digits, or for a scan kind the
    clean scan) and noisy copies.
    """
    labels_in = list(scanset.KINDS) if scans else [str(NoiseSpec.parse(n)) for n in noises]
    if len(set(labels_in)) != len(labels_in):
        raise ValueError(f"the same noise is named twice in {', '.join(noises)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if tune_images < 1:
        raise ValueError(f"tune_images must be >= 1, got {tune_images}")
    data = load_dataset(data_dir, dataset=DATASETS[dataset])
    test = data.test_images[:limit]
    _, val_idx = split_train_val(len(data.train_images), TrainConfig())
    val = data.train_images[val_idx[:tune_images]]
    out = Path(out_dir)
    prepared: dict[str, Any] = {
        "dir": str(out), "seed": seed, "noises": labels_in, "scans": scans,
        "labels": str(save_array(out / "test_labels.npy", data.test_labels[:limit])),
        "reference": str(save_array(out / "reference_images.npy", data.train_images)),
        "reference_labels": str(save_array(out / "reference_labels.npy", data.train_labels)),
        "clean": {}, "noisy": {}, "clean_val": {}, "noisy_val": {},
    }
    if not scans:
        clean_test = str(save_array(out / "clean_test.npy", to_float(test)))
        clean_val = str(save_array(out / "clean_val.npy", to_float(val)))
    for i, label in enumerate(labels_in):
        if scans:
            truth, noisy = scanset.render(test, label, seed=seed)
            truth_val, noisy_val = scanset.render(val, label, seed=seed + 1)
            prepared["clean"][label] = str(save_array(out / f"clean_test_{i}.npy", truth))
            prepared["clean_val"][label] = str(save_array(out / f"clean_val_{i}.npy", truth_val))
        else:
            noise = NoiseSpec.parse(label)
            _, noisy = synthesize(test, spec=noise, seed=seed)
            _, noisy_val = synthesize(val, spec=noise, seed=seed + 1)
            prepared["clean"][label], prepared["clean_val"][label] = clean_test, clean_val
        prepared["noisy"][label] = str(save_array(out / f"noisy_test_{i}.npy", noisy))
        prepared["noisy_val"][label] = str(save_array(out / f"noisy_val_{i}.npy", noisy_val))
    write_json(out / "prepared.json", prepared)
    log.info("evaluating on %d test images (%d for tuning) with %s", len(test), len(val),
             ", ".join(labels_in))
    return prepared


def _classifier(prepared: dict) -> digits.NearestNeighbour:
    reference = load_array(prepared["reference"])
    return digits.NearestNeighbour(reference, load_array(prepared["reference_labels"]))


def _rows(method: str, kind: str, noise: str, prepared: dict, output: np.ndarray,
          classifier: digits.NearestNeighbour) -> pd.DataFrame:
    labels = load_array(prepared["labels"]).astype(np.int64)
    clean = load_array(prepared["clean"][noise])
    return pd.DataFrame({
        "method": method, "kind": kind, "noise": noise, "noise_seed": prepared["seed"],
        "image_index": np.arange(len(clean)), "label": labels,
        "psnr": psnr(clean, output), "ssim": ssim(clean, output), "mse": mse(clean, output),
        "correct": classifier.predict(output) == labels,
        "correct_truth": classifier.predict(clean) == labels,
    })


def _write_part(out_dir: Path, name: str, frames: list[pd.DataFrame], meta: list[dict]) -> str:
    path = out_dir / "parts" / f"{name}.parquet"
    write_parquet(pd.concat(frames, ignore_index=True), path)
    write_json(path.with_suffix(".json"), meta)
    return str(path)


def score_noisy(out_dir: str | os.PathLike[str], prepared: dict) -> str:
    """The identity baseline: the noisy input itself, the number every method must beat."""
    classifier = _classifier(prepared)
    frames, meta = [], []
    for spec in prepared["noises"]:
        noisy = load_array(prepared["noisy"][spec])
        frames.append(_rows("noisy", "identity", spec, prepared, noisy, classifier))
        meta.append({"method": "noisy", "kind": "identity", "noise": spec, "images_per_s": None,
                     "params": {}})
    return _write_part(Path(out_dir), "noisy", frames, meta)


def score_model(out_dir: str | os.PathLike[str], prepared: dict, model: str, *,
                models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
                device: str = "auto", batch_size: int | None = None, precision: str = "auto") -> str:
    """A trained model (id in the store or a .pt path) on every noise."""
    found = checkpoint.resolve_checkpoint(model, models_dir)
    torch_device = resolve_device(device)
    chosen = resolve_precision(precision, torch_device)
    net = checkpoint.load_model(found, device=torch_device)
    classifier = _classifier(prepared)
    frames, meta = [], []
    for spec in prepared["noises"]:
        noisy = load_array(prepared["noisy"][spec])
        run = dict(as_scans=prepared["scans"], device=torch_device, batch_size=batch_size, precision=chosen)
        restore.apply_model(found.metadata, net, noisy[:64], **run)  # warm-up
        started = time.perf_counter()
        output = restore.apply_model(found.metadata, net, noisy, **run)
        rate = len(noisy) / (time.perf_counter() - started)
        frames.append(_rows(found.model_id, "model", spec, prepared, output, classifier))
        recipe = found.metadata.get("config", {})
        meta.append({"method": found.model_id, "kind": "model", "noise": spec, "images_per_s": rate,
                     "params": {"weights": count_parameters(net), "architecture": recipe.get("model"),
                                "trained_on": recipe.get("noise"), "epochs": recipe.get("epochs"),
                                "device": str(torch_device), "precision": chosen.name}})
    return _write_part(Path(out_dir), found.model_id, frames, meta)


def tune(baseline: baselines.Baseline, clean_val: np.ndarray, noisy_val: np.ndarray, *,
         tone_curve: bool = True) -> tuple[dict[str, Any], Callable[[np.ndarray], np.ndarray]]:
    """The grid value with the best mean validation PSNR (after the tone curve fitted for
    it, unless ``tone_curve`` is off), with every value's score; and that value's curve."""
    scores, curves = {}, {}
    for value in baseline.grid:
        output = baselines.apply(baseline, noisy_val, value)
        curves[value] = baselines.ToneCurve(output, clean_val) if tone_curve else _identity
        scores[value] = float(psnr(clean_val, curves[value](output)).mean())
    best = max(scores, key=scores.get)
    params = {baseline.parameter: best, "validation_psnr": {str(k): round(v, 3) for k, v in scores.items()}}
    return params, curves[best]


def _identity(images: np.ndarray) -> np.ndarray:
    return images


def score_baseline(out_dir: str | os.PathLike[str], prepared: dict, name: str) -> str | None:
    """A classical baseline on every noise, tuned per noise; None when its package is missing.

    On MNIST noises its output goes through a tone curve fitted on the validation truth
    (the bias correction a model learns). On scans it does not: a user filtering a scan has
    no clean copy to fit one on, and the scan kinds' truths have their own tones."""
    baseline = baselines.get(name)
    missing = baseline.missing()
    if missing:
        log.warning("baseline %s skipped: needs %s (pip install .[baselines]%s)", name,
                    ", ".join(missing), "; bm3d: pip install bm3d" if name == "bm3d" else "")
        return None
    classifier = _classifier(prepared)
    frames, meta = [], []
    for spec in prepared["noises"]:
        clean_val = load_array(prepared["clean_val"][spec])
        noisy_val = load_array(prepared["noisy_val"][spec])
        tuned, curve = tune(baseline, clean_val, noisy_val, tone_curve=not prepared["scans"])
        value = tuned[baseline.parameter]
        noisy = load_array(prepared["noisy"][spec])
        started = time.perf_counter()
        output = curve(baselines.apply(baseline, noisy, value))
        rate = len(noisy) / (time.perf_counter() - started)
        log.info("%s on %s: %s = %g (tuned), %.0f images/s", name, spec, baseline.parameter, value, rate)
        frames.append(_rows(name, "baseline", spec, prepared, output, classifier))
        meta.append({"method": name, "kind": "baseline", "noise": spec, "images_per_s": rate,
                     "params": {**tuned, "tone_curve": not prepared["scans"]}})
    return _write_part(Path(out_dir), name, frames, meta)


def summarize(out_dir: str | os.PathLike[str], parts: list[str | None]) -> dict[str, Any]:
    """Join the parts into ``evaluation.parquet`` and ``summary.json``; the summary rows."""
    out = Path(out_dir)
    found = [Path(p) for p in parts if p]
    if not found:
        raise ValueError("nothing was evaluated: every method was skipped")
    rows = pd.concat([pd.read_parquet(p) for p in found], ignore_index=True)
    meta = {(m["method"], m["noise"]): m for p in found for m in read_json(p.with_suffix(".json"))}
    table = []
    for (method, noise), group in rows.groupby(["method", "noise"], sort=False):
        info = meta[(method, noise)]
        table.append({
            "method": method, "kind": info["kind"], "noise": noise, "images": len(group),
            "psnr_mean": float(group["psnr"].mean()), "psnr_median": float(group["psnr"].median()),
            "ssim_mean": float(group["ssim"].mean()), "ssim_median": float(group["ssim"].median()),
            "accuracy": float(group["correct"].mean()),
            "accuracy_truth": float(group["correct_truth"].mean()),
            "images_per_s": info["images_per_s"], "params": info["params"],
        })
    table.sort(key=lambda r: (r["noise"], -r["psnr_mean"]))
    write_parquet(rows, out / "evaluation.parquet")
    summary = {"rows": table, "evaluation": str(out / "evaluation.parquet")}
    write_json(out / "summary.json", summary)
    return summary


def format_table(rows: list[dict]) -> str:
    """The summary as an aligned text table."""
    lines = [f"{'noise':18}{'method':24}{'PSNR mean':>10}{'median':>8}{'SSIM mean':>10}{'median':>8}"
             f"{'digits':>8}{'truth':>7}{'images/s':>11}  params"]
    for r in rows:
        rate = "" if r["images_per_s"] is None else f"{r['images_per_s']:,.0f}"
        params = {k: v for k, v in r["params"].items() if k != "validation_psnr"}
        lines.append(f"{r['noise']:18}{r['method']:24}{r['psnr_mean']:10.2f}{r['psnr_median']:8.2f}"
                     f"{r['ssim_mean']:10.3f}{r['ssim_median']:8.3f}{100 * r['accuracy']:7.1f}%"
                     f"{100 * r['accuracy_truth']:6.1f}%{rate:>11}  {json.dumps(params)}")
    return "\n".join(lines)


def evaluate(out_dir: str | os.PathLike[str], *, models: list[str], baseline_names: list[str],
             noises: list[str], scans: bool = False, data_dir: str | None = None, dataset: str = "mnist",
             limit: int | None = None, tune_images: int = 300, seed: int = 0,
             models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
             device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """Every stage in order, without Prefect (``flows/evaluate.py`` adds a task per method)."""
    prepared = prepare(out_dir, data_dir=data_dir, dataset=dataset, noises=noises, scans=scans,
                       limit=limit, tune_images=tune_images, seed=seed)
    parts = [score_noisy(out_dir, prepared)]
    parts += [score_model(out_dir, prepared, m, models_dir=models_dir, device=device, precision=precision)
              for m in models]
    parts += [score_baseline(out_dir, prepared, name) for name in baseline_names]
    return summarize(out_dir, parts)
