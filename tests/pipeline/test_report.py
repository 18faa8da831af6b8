import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from denoiser import files
from denoiser.models.recipe import TrainConfig
from denoiser.pipeline import report, stages

REQUIRED = ["run_id", "image_index", "split", "label", "noise", "noise_seed", "model_id",
            "mse_noisy", "mse_denoised", "psnr_noisy", "psnr_denoised", "ssim_noisy",
            "ssim_denoised"]


def test_report_rows_and_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    noisy = rng.random((12, 28, 28)).astype(np.float32)
    exact = clean.astype(np.float32) / 255.0
    frame = report.build_report(run_id="r1", clean=clean, noisy=noisy, denoised=exact,
                                labels=np.arange(12) % 10, split="test", noise="gaussian:0.5",
                                noise_seed=3, model_id="conv-x")
    path = files.write_parquet(frame, tmp_path / "report.parquet")
    back = pd.read_parquet(path)
    assert list(back.columns[: len(REQUIRED)]) == REQUIRED
    assert len(back) == 12 and back["image_index"].tolist() == list(range(12))
    assert (back["psnr_denoised"] == np.inf).all()  # denoised == clean exactly
    assert back["psnr_noisy"].between(0, 20).all()
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_report_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        report.build_report(run_id="r", clean=np.zeros((3, 28, 28)), noisy=np.zeros((2, 28, 28)),
                            denoised=np.zeros((3, 28, 28)), labels=np.zeros(3), split="test",
                            noise="gaussian:0.5", noise_seed=0, model_id="m")


def test_preview_has_three_rows_of_ten():
    rows = [np.random.default_rng(i).random((10, 28, 28)) for i in range(3)]
    image = report.preview_image(rows, scale=3, gap=2)
    assert image.size == (10 * (28 * 3 + 2) + 2, 3 * (28 * 3 + 2) + 2)


def test_whole_pipeline_without_prefect(tmp_path, idx_dir):
    folder, _ = idx_dir
    result = stages.run_pipeline(
        runs_dir=tmp_path / "runs", run_id="r1", data_dir=str(folder), dataset="idx",
        config=TrainConfig(model="conv", epochs=1, batch_size=16), test_limit=20,
        models_dir=tmp_path / "models", device="cpu",
    )
    run_dir = tmp_path / "runs" / "r1"
    frame = pd.read_parquet(result["report"])
    assert len(frame) == 20 and set(frame["split"]) == {"test"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["images"] == 20
    assert set(summary["seconds_per_stage"]) == set(stages.STAGES)
    assert summary["mean_psnr_denoised"] > summary["mean_psnr_noisy"]
    assert summary["denoise_images_per_second"] > 0
    preview = Image.open(run_dir / "preview.png")
    assert preview.mode == "L" and preview.size[0] > preview.size[1]
    # Every stage left its record, and nothing half-written is lying around.
    assert sorted(p.stem for p in (run_dir / "stages").iterdir()) == sorted(stages.STAGES)
    assert not [p for p in run_dir.rglob(".*.part")]


