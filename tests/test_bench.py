"""The benchmark runs (a smoke test at tiny sizes: speed targets are not tested here)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_writes_every_figure(tmp_path, prefect_api):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    # On the session's test server: each run on an ephemeral API would start a server (~15 s).
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--api", prefect_api, "--json", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    figures = {
        "train.ratio": result["train"]["ratio"],
        "train.limit_fraction": result["train"]["limit_fraction"],
        "infer.ratio": result["infer"]["ratio"],
        "infer.limit_fraction": result["infer"]["limit_fraction"],
        "folder.fraction_of_slowest_part": result["folder"]["fraction_of_slowest_part"],
        "folder.prefect_overhead_fraction": result["folder"]["prefect_overhead_fraction"],
        "memory.rss_growth": result["memory"]["rss_growth"],
    }
    for name, value in figures.items():
        assert isinstance(value, float) and math.isfinite(value), name
    assert result["train"]["product_images_per_s"] > 0 and result["infer"]["reference_images_per_s"] > 0
    assert result["machine"]["fp32_flops"]["median"] > 1e9
    assert result["machine"]["fp32_conv_flops"]["median"] > 1e9
    limit = result["machine"]["limit"]
    assert limit["precision"] in ("fp32", "bf16") and limit["kernel"] in ("matmul", "conv3x3")
    # The limit is the peak of the precision the product ran in: the faster of the two kernels.
    kernels = {"matmul": f"{limit['precision']}_flops", "conv3x3": f"{limit['precision']}_conv_flops"}
    assert limit["flops"] == max(result["machine"][key]["median"] for key in kernels.values())
    # No fraction of the limit above 1 goes without a reason beside it.
    for part in (result["train"], result["infer"], result["train"]["default_model"],
                 result["infer"]["default_model"]):
        assert (part["limit_fraction"] > 1) == (part["limit_note"] is not None)
    assert result["model_flops"]["conv"]["forward"] == 83_994_624  # the tutorial's model: 84 MFLOP
    runs = result["folder"]["runs"]
    assert [runs[n]["files"] for n in ("40", "80")] == [40, 80]
    assert "train conv" in run.stdout and "Prefect overhead" in run.stdout
    assert result["folder"]["api"] == f"prefect server at {prefect_api}"


def test_a_fraction_above_the_limit_is_named():
    from bench.machine import limit_note

    assert limit_note(0.97) is None and limit_note(1.0) is None
    assert "Winograd" in limit_note(1.2)


def test_gpu_only_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/test_gpu.py and `python -m bench --gpu-only` run there")
    run = subprocess.run([sys.executable, "-m", "bench", "--gpu-only"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.strip() == "--gpu-only: no CUDA GPU is available here"


def test_the_noise2void_peer_lays_scans_side_by_side_and_takes_them_back_whole():
    """bench/n2v.py runs in CAREamics' own environment (not CI's); what it does to the folder's
    scans around CAREamics is checked here: the mosaic gives back every scan as it was, the
    patch fits the scans, and a folder of several sizes is named as skipped, not run."""
    import numpy as np

    from bench import adapt, n2v

    scans = np.random.default_rng(0).random((7, 28, 28)).astype(np.float32)
    canvas = n2v.mosaic(scans)
    assert canvas.shape == (3 * 28, 3 * 28)
    assert np.array_equal(n2v.unmosaic(canvas, 7, 28, 28), scans)
    assert (n2v.patch_for(28), n2v.patch_for(84), n2v.patch_for(10)) == (16, 64, 16)
    mixed = [np.zeros((28, 28)), np.zeros((84, 84))]
    assert "several sizes" in adapt.noise2void(sys.executable, mixed, mixed, 0.1)["skipped"]
