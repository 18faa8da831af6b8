"""``denoiser evaluate`` as a user runs it."""

import importlib.util
import json

import pandas as pd
import pytest

from tests.helpers import denoiser


# from evaluation/test_evaluate.py
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image")
def test_evaluate_command_prints_the_table_and_writes_json(idx_dir, trained_store, tmp_path):
    folder, _ = idx_dir
    out = denoiser("evaluate", "--models", "unet-tiny", "--models-dir", str(trained_store), "--baselines",
                   "tv,median", "--limit", "16", "--tune-images", "20", "--data-dir", str(folder),
                   "--dataset", "idx",
                   "--device", "cpu", "--out-dir", str(tmp_path / "eval"), "--json", str(tmp_path / "e.json"),
                   cwd=tmp_path, env={"PREFECT_HOME": str(tmp_path / "prefect")})
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

