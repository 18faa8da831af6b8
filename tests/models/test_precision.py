"""Precision: bf16 autocast where it pays, float32 otherwise, and the two agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from denoiser.files import save_array
from denoiser.metrics import psnr
from denoiser.models import checkpoint, precision
from denoiser.models.infer import denoise, denoise_images
from denoiser.models.precision import FP32, Precision, resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.pipeline import train_stage
from denoiser.training.loop import train
from tests.helpers import draw_digits

CPU = torch.device("cpu")
BF16 = Precision("bf16", "test")
needs_bf16 = pytest.mark.skipif(not precision.bf16_supported(CPU), reason="this CPU has no bf16 kernels")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "precision.json"))


def _trained(images: np.ndarray, chosen: Precision, epochs: int = 2) -> torch.nn.Module:
    config = TrainConfig(model="conv", epochs=epochs, batch_size=32, learning_rate=2e-3,
                         train_limit=len(images))
    return train(images, config, device=CPU, precision=chosen, show_progress=False).model


@needs_bf16
def test_bf16_outputs_agree_with_float32_on_a_trained_model():
    images = draw_digits(160, seed=0)[0]
    model = _trained(images, FP32)
    noisy = np.clip(images[:64] / 255 + 0.5 * np.random.default_rng(1).standard_normal((64, 28, 28)), 0, 1)
    exact = denoise(model, noisy.astype(np.float32), precision=FP32)
    fast = denoise(model, noisy.astype(np.float32), precision=BF16)
    assert fast.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: outputs differ in the third decimal, far below the error.
    assert float(np.abs(fast - exact).max()) < 0.03
    clean = images[:64] / 255
    gap = psnr(clean, fast).mean() - psnr(clean, exact).mean()
    assert abs(gap) < 0.05
    # Scans of any size take the same path.
    [big] = denoise_images(model, [noisy[0].repeat(3, 0)], precision=BF16)
    [big_exact] = denoise_images(model, [noisy[0].repeat(3, 0)], precision=FP32)
    assert float(np.abs(big - big_exact).max()) < 0.03


@needs_bf16
def test_a_bf16_training_run_learns_as_float32_does():
    images = draw_digits(256, seed=2)[0]
    losses = {}
    for chosen in (FP32, BF16):
        config = TrainConfig(model="conv", epochs=3, batch_size=32, learning_rate=2e-3, train_limit=256)
        result = train(images, config, device=CPU, precision=chosen, show_progress=False)
        assert result.precision == chosen
        losses[chosen.name] = [s.val_loss for s in result.history]
        for weights in result.model.parameters():
            assert weights.dtype == torch.float32  # autocast keeps the weights in float32
    assert losses["bf16"][-1] < losses["bf16"][0]
    assert losses["bf16"][-1] == pytest.approx(losses["fp32"][-1], rel=0.05)


def test_auto_falls_back_to_float32_where_bf16_is_missing(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    chosen = resolve_precision("auto", CPU)
    assert chosen == Precision("fp32", "auto: this CPU has no bf16 support")
    with pytest.raises(ValueError, match="bf16 was asked for but this CPU has no bf16 support"):
        resolve_precision("bf16", CPU)
    assert resolve_precision("fp32", CPU).name == "fp32"


def test_auto_keeps_float32_where_bf16_measures_slower(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "cpu_speeds", lambda: {"fp32": 10.0, "bf16": 4.0})  # the Xeon's case
    chosen = resolve_precision("auto", CPU)
    assert chosen.name == "fp32" and "0.40x" in chosen.reason
    monkeypatch.setattr(precision, "cpu_speeds", lambda: {"fp32": 10.0, "bf16": 21.0})
    assert resolve_precision("auto", CPU).name == "bf16"


@needs_bf16
def test_the_measurement_is_made_once_per_machine_and_kept(tmp_path):
    first = precision.cpu_speeds()
    kept = json.loads((tmp_path / "precision.json").read_text())
    assert kept == {precision.machine_key(): first}
    assert first["fp32"] > 0 and first["bf16"] > 0
    assert precision.cpu_speeds() == first  # read back, not measured again
    assert resolve_precision("auto", CPU).reason.startswith("auto: bf16 measured")


def test_unknown_precision_is_a_plain_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)


def test_the_trained_model_records_its_precision(tmp_path):
    images = draw_digits(64, seed=3)[0]
    path = save_array(tmp_path / "train.npy", images)
    config = TrainConfig(model="conv", epochs=1, batch_size=32, train_limit=64)
    result = train_stage.train_or_load(tmp_path / "run", train_images=str(path), train_sha256="x" * 64,
                                  config=config, models_dir=tmp_path / "models", precision="fp32")
    metadata = checkpoint.resolve_checkpoint(result["model_id"], tmp_path / "models").metadata
    assert metadata["precision"] == "fp32" and metadata["precision_reason"] == "float32 as asked"
    assert result["precision"] == "fp32"
    loaded = train_stage.train_or_load(tmp_path / "run2", train_images=str(path), train_sha256="x" * 64,
                                  config=config, models_dir=tmp_path / "models", precision="auto")
    assert not loaded["trained"] and loaded["precision"] == "fp32"  # what it was trained in

