"""Evaluation of models and classical baselines on a tiny synthetic set."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from denoiser.evaluation import baselines, evaluate, scanset


def test_every_method_scores_the_same_images_and_the_model_beats_the_noisy_input(
        idx_dir, trained_store, tmp_path):
    folder, _ = idx_dir
    fast = [b for b in baselines.BASELINES if b != "bm3d"]  # bm3d: ~1 s per image, if installed
    summary = evaluate.evaluate(tmp_path / "eval", models=["unet-tiny"], baseline_names=fast,
                                noises=["gaussian:0.5", "salt-pepper:0.1"], data_dir=str(folder),
                                dataset="idx", limit=24, models_dir=trained_store, device="cpu")
    available = [b for b in fast if not baselines.get(b).missing()]
    expected = {"noisy", "unet-tiny", *available}
    rows = {(r["method"], r["noise"]): r for r in summary["rows"]}
    assert {m for m, _ in rows} == expected
    for row in summary["rows"]:
        assert math.isfinite(row["psnr_mean"]) and math.isfinite(row["ssim_mean"]), row["method"]
        assert row["images"] == 24
    for name in available:  # the tuned value is one of the grid's, recorded with its scores
        baseline = baselines.get(name)
        params = rows[(name, "gaussian:0.5")]["params"]
        assert params[baseline.parameter] in baseline.grid
        assert len(params["validation_psnr"]) == len(baseline.grid)
        assert rows[(name, "gaussian:0.5")]["images_per_s"] > 0
    psnr = {key: row["psnr_mean"] for key, row in rows.items()}
    assert psnr[("unet-tiny", "gaussian:0.5")] > psnr[("noisy", "gaussian:0.5")] + 2
    # Trained on Gaussian noise, it still helps with salt and pepper.
    assert psnr[("unet-tiny", "salt-pepper:0.1")] > psnr[("noisy", "salt-pepper:0.1")]
    assert rows[("unet-tiny", "gaussian:0.5")]["params"]["weights"] > 100_000

    frame = pd.read_parquet(summary["evaluation"])
    assert len(frame) == 24 * 2 * len(expected)
    assert set(frame.columns) >= {"method", "noise", "noise_seed", "image_index", "label", "psnr", "ssim"}
    # Every method saw the same noisy images: the noisy rows' PSNR is the same per image.
    noisy = frame[(frame["method"] == "noisy") & (frame["noise"] == "gaussian:0.5")]
    assert noisy["image_index"].tolist() == list(range(24))
    assert json.loads((tmp_path / "eval/summary.json").read_text())["rows"][0]["method"]


def test_missing_baseline_packages_are_skipped_with_a_note(tmp_path, idx_dir, caplog):
    folder, _ = idx_dir
    prepared = evaluate.prepare(tmp_path, data_dir=str(folder), dataset="idx", limit=4)
    fake = baselines.Baseline("fake", "x", (1.0,), ("no_such_module_here",), lambda im, v: im)
    baselines.REGISTRY["fake"] = fake
    try:
        assert evaluate.score_baseline(tmp_path, prepared, "fake") is None
    finally:
        del baselines.REGISTRY["fake"]
    assert "baseline fake skipped: needs no_such_module_here" in caplog.text
    with pytest.raises(ValueError, match="unknown baseline 'blur'"):
        baselines.get("blur")


def test_tone_curve_removes_the_bias_of_clipped_noise():
    rng = np.random.default_rng(0)
    clean = (rng.random((50, 28, 28)) > 0.8).astype(float)
    biased = 0.2 + 0.6 * clean  # what smoothing clipped noise leaves: a gray background
    curve = baselines.ToneCurve(biased, clean)
    np.testing.assert_allclose(curve(biased), clean, atol=1e-9)


def test_scan_evaluation_scores_every_kind_against_its_own_truth(idx_dir, trained_store, tmp_path):
    folder, _ = idx_dir
    summary = evaluate.evaluate(tmp_path / "scans", models=["unet-tiny"], baseline_names=["median"],
                                noises=[], scans=True, data_dir=str(folder), dataset="idx", limit=12,
                                tune_images=8, models_dir=trained_store, device="cpu")
    kinds = set(scanset.KINDS)
    rows = {(r["method"], r["noise"]): r for r in summary["rows"]}
    methods = {"noisy", "unet-tiny"} | ({"median"} if not baselines.get("median").missing() else set())
    assert set(rows) == {(m, k) for m in methods for k in kinds}
    for row in summary["rows"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["accuracy_truth"] <= 1
        assert math.isfinite(row["psnr_mean"])
    frame = pd.read_parquet(summary["evaluation"])
    assert len(frame) == 12 * len(kinds) * len(methods)
    assert frame["correct"].dtype == bool and frame["correct_truth"].dtype == bool
    prepared = json.loads((tmp_path / "scans/prepared.json").read_text())
    assert np.load(prepared["clean"]["scale-3x"]).shape == (12, 84, 84)
    faded = np.load(prepared["clean"]["faded"])
    assert np.median(faded) > 0.6  # the truth keeps its grey paper
    if "median" in methods:
        assert rows[("median", "tutorial-noise")]["params"]["tone_curve"] is False
