"""The adaptation flow under Prefect's test harness, and its gate alone."""

import shutil

import numpy as np
from PIL import Image
from prefect import flow

from denoiser.models import checkpoint
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


def test_a_folder_that_is_not_white_trains_on_its_own_backgrounds_and_the_gate_decides(tmp_path, idx_dir,
                                                                                        trained_store):
    from denoiser import files

    folder, _ = idx_dir
    models = tmp_path / "models"
    shutil.copytree(trained_store, models)
    scans = tmp_path / "scans"
    write_noisy_digits(scans, 0.1, ramp=0.4)  # uneven lighting: its "noise" is not white
    result = adapt_folder(in_dir=str(scans), parent="unet-tiny", minutes=0.02, models_dir=str(models),
                          data_dir=str(folder), dataset="idx", runs_dir=str(tmp_path / "runs"), device="cpu")
    assert result["white"] is False and result["composite"] is True  # not refused for its noise
    adapted = checkpoint.resolve_checkpoint(result["model_id"], models).metadata["adapted"]
    # Trained on the folder's fitted scanning where it describes the folder, else on composites.
    fitted = adapted["scanning"] is not None and adapted["scanning"]["trained_on"]
    assert adapted["trained_on"].startswith("digits scanned" if fitted else "composites") and adapted["steps"] > 0
    assert result["chosen"] == (result["model_id"] if result["passed"] else "unet-tiny")
    assert "backgrounds of the folder's scans that training never saw" in result["why"]
    assert f"{result['parent_db']:.2f} dB (parent)" in result["why"]
    (record,) = (tmp_path / "runs").glob("adapt-*/outcome.json")
    assert files.read_json(record)["why"] == result["why"]


def test_the_gate_keeps_the_parent_unless_the_adapted_model_passes():
    outcome = {"model_id": "unet-new", "parent": "unet-old", "passed": False, "parent_db": 20.0,
               "adapted_db": 20.5, "blind_spot": {"parent": 0.05, "adapted": 0.06}}
    assert gate_alone(outcome)["chosen"] == "unet-old"
    assert gate_alone({**outcome, "passed": True})["chosen"] == "unet-new"
    shapes = {"parent_digit_p": 0.404, "adapted_digit_p": 0.342, "passed": False}
    refused = gate_alone({**outcome, "composite": True, "shapes": shapes})
    assert refused["chosen"] == "unet-old"
    assert "20.00 dB (parent) -> 20.50 dB (adapted) on digits laid on backgrounds" in refused["why"]
    assert "p 0.404 -> 0.342" in refused["why"]  # the label-free check on the real scans says why


def write_noisy_digits(folder, sigma, n=30, ramp=0.0):
    """``n`` digits with Gaussian noise ``sigma``, lit unevenly where ``ramp`` (0 to ``ramp`` across)."""
    from tests.helpers import draw_digits

    folder.mkdir(exist_ok=True)
    clean = draw_digits(n, seed=2)[0].astype(np.float32) / 255
    clean = clean + np.linspace(0, ramp, clean.shape[-1], dtype=np.float32)
    noisy = np.clip(clean + sigma * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    for i, image in enumerate(noisy):
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")


def test_clean_adapt_adapts_once_reuses_and_adapts_again_on_drift(tmp_path, trained_store, mnist_dir):
    from denoiser.adapt import decide
    from denoiser.folders.settings import CleanOptions, CleanRun
    from flows.clean import clean_folder

    models = tmp_path / "models"
    shutil.copytree(trained_store, models)
    scans, out = tmp_path / "scans", tmp_path / "out"
    write_noisy_digits(scans, 0.3)
    options = dict(options=CleanOptions(device="cpu"),
                   run=CleanRun(model="unet-tiny", models_dir=str(models), data_dir=str(mnist_dir),
                                runs_dir=str(tmp_path / "runs"), adapt=True, adapt_minutes=0.02))
    first = clean_folder(in_dir=str(scans), out_dir=str(out), **options)
    state = decide.read_adaptation(out)
    assert state["parent"] == "unet-tiny" and first["model_id"] == state["chosen"]
    stored = {c.model_id for c in checkpoint.list_checkpoints(models)}
    clean_folder(in_dir=str(scans), out_dir=str(out), **options)  # same noise: reused, nothing made
    assert {c.model_id for c in checkpoint.list_checkpoints(models)} == stored
    assert decide.read_adaptation(out) == state
    write_noisy_digits(scans, 0.8)  # the scanner got much worse
    clean_folder(in_dir=str(scans), out_dir=str(out), **options)
    again = decide.read_adaptation(out)
    assert again["model_id"] != state["model_id"] and np.median(again["levels"]) > np.median(state["levels"])


def test_clean_adapt_on_a_folder_that_is_not_white_adapts_and_cleans_with_the_gates_choice(tmp_path, trained_store, mnist_dir):
    from denoiser.adapt import decide
    from denoiser.folders.settings import CleanOptions, CleanRun
    from flows.clean import clean_folder

    models = tmp_path / "models"
    shutil.copytree(trained_store, models)
    scans, out = tmp_path / "scans", tmp_path / "out"
    write_noisy_digits(scans, 0.1, ramp=0.4)
    result = clean_folder(in_dir=str(scans), out_dir=str(out), options=CleanOptions(device="cpu"),
                          run=CleanRun(model="unet-tiny", models_dir=str(models), data_dir=str(mnist_dir),
                                       runs_dir=str(tmp_path / "runs"), adapt=True, adapt_minutes=0.02))
    state = decide.read_adaptation(out)
    assert state["model_id"] is not None and state["chosen"] in (state["model_id"], "unet-tiny")
    assert result["model_id"] == state["chosen"]
    assert len(state["correlations"]) == len(state["levels"]) == 30  # what the next run compares against
