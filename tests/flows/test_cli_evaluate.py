"""``denoiser evaluate`` as a user runs it."""

import importlib.util
import json

import pandas as pd
import pytest

from tests.helpers import denoiser


# from evaluation/test_evaluate.py
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image")
def test_evaluate_command_prints_the_table_and_writes_json(idx_dir, trained_store, tmp_path, api_env):
    folder, _ = idx_dir
    out = denoiser("evaluate", "--models", "unet-tiny", "--models-dir", str(trained_store), "--baselines",
                   "tv,median", "--limit", "16", "--tune-images", "20", "--data-dir", str(folder),
                   "--dataset", "idx",
                   "--device", "cpu", "--out-dir", str(tmp_path / "eval"), "--json", str(tmp_path / "e.json"),
                   cwd=tmp_path, env={"PREFECT_HOME": str(tmp_path / "prefect"), **api_env})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unet-tiny" in out.stdout and "PSNR mean" in out.stdout
    rows = json.loads((tmp_path / "e.json").read_text())
    assert {r["method"] for r in rows} == {"noisy", "unet-tiny", "tv", "median"}
    for row in rows:
        assert {"method", "noise", "psnr_mean", "ssim_mean", "images_per_s", "params"} <= set(row)
    assert len(pd.read_parquet(tmp_path / "eval/evaluation.parquet")) == 16 * 4


def test_evaluate_command_refuses_bad_input_in_one_line(tmp_path, trained_store):
    bad = denoiser("evaluate", "--baselines", "tv,blur", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown baseline 'blur'" in bad.stderr
    missing = denoiser("evaluate", "--models", "unet-nope", "--models-dir", str(trained_store), cwd=tmp_path)
    assert missing.returncode in (1, 2) and len(missing.stderr.strip().splitlines()) == 1
    assert "unet-nope" in missing.stderr



def test_evaluate_real_prints_the_table_and_writes_what_it_says(untrained, tmp_path, api_env, typed_reader):
    """``evaluate --real`` as a user runs it, default device and all: the reader is a quick one
    trained on typed digits (the product's own trains on MNIST, minutes)."""
    import shutil

    from denoiser.evaluation import recognizer
    from denoiser.models import registry
    from tests.evaluation.test_real import write_scans

    models = tmp_path / "models"
    shutil.copytree(untrained.weights.parent, models)
    registry.promote(models, "conv-test", "clean", score=lambda _: 0.0)
    shutil.copytree(typed_reader.parent, recognizer.reader_path(models).parent)
    truth = write_scans(tmp_path / "scans", n=30, layout="folders")
    out = denoiser("evaluate", "--real", str(tmp_path / "scans"), "--models-dir", str(models), "--out-dir",
                   str(tmp_path / "eval"), "--json", str(tmp_path / "e.json"), cwd=tmp_path,
                   env={"PREFECT_HOME": str(tmp_path / "prefect"), **api_env})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read correctly" in out.stdout and "clean (conv-test)" in out.stdout
    rows = pd.read_parquet(tmp_path / "eval" / "real.parquet")
    assert set(rows["method"]) == {"input", "median 3x3", "gaussian 1", "clean (conv-test)"}
    assert len(rows) == 4 * len(truth) and set(rows["path"]) == set(truth)
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["images"] == len(truth) and (tmp_path / "eval" / "sheet-sample.png").is_file()
    bad = denoiser("evaluate", "--real", str(tmp_path / "nowhere"), "--models-dir", str(models), cwd=tmp_path)
    assert bad.returncode in (1, 2) and len(bad.stderr.strip().splitlines()) == 1 and "nowhere" in bad.stderr
