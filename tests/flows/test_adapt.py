"""The adaptation flow under Prefect's test harness, and its gate alone."""

import shutil

import numpy as np
from PIL import Image

from prefect import flow

from denoiser import checkpoint
from flows.adapt import adapt_folder, gate


@flow
def gate_alone(outcome: dict) -> dict:
    return gate(outcome)


def test_the_flow_samples_adapts_and_gates(tmp_path, idx_dir, untrained):
    folder, _ = idx_dir
    models = tmp_path / "models"
    models.mkdir()
    for path in (untrained.weights, untrained.weights.with_suffix(".json")):
        shutil.copy(path, models)
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for i in range(15):
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(scans / f"{i}.png")
    (scans / "bad.png").write_bytes(b"junk")
    result = adapt_folder(in_dir=str(scans), parent="conv-test", minutes=0.02, models_dir=str(models),
                          data_dir=str(folder), dataset="idx", runs_dir=str(tmp_path / "runs"), device="cpu")
    assert (result["files"], result["images"], result["unreadable"]) == (16, 15, 1)
    assert result["chosen"] in (result["model_id"], "conv-test")
    adapted = checkpoint.resolve_checkpoint(result["model_id"], models).metadata["adapted"]
    assert adapted["parent"] == "conv-test" and adapted["gate_passed"] == result["passed"]
    assert "blind-spot loss" in result["why"]


def test_the_gate_keeps_the_parent_unless_the_adapted_model_passes():
    outcome = {"model_id": "unet-new", "parent": "unet-old", "passed": False, "parent_db": 20.0,
               "adapted_db": 20.5, "blind_spot": {"parent": 0.05, "adapted": 0.06}}
    assert gate_alone(outcome)["chosen"] == "unet-old"
    assert gate_alone({**outcome, "passed": True})["chosen"] == "unet-new"
