import numpy as np
import pytest
import torch
from tests.helpers import draw_digits

from denoiser import checkpoint, stages
from denoiser.data import array_digest
from denoiser.infer import denoise
from denoiser.train import TrainConfig, split_train_val, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return draw_digits(320, seed=5)[0]


def test_config_validates_values():
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        TrainConfig(noise="pink:1")
    assert TrainConfig(noise="gaussian:0.50").noise == "gaussian:0.5"


def test_split_holds_out_validation_and_is_deterministic():
    config = TrainConfig(train_limit=100)
    train_idx, val_idx = split_train_val(1000, config)
    assert len(train_idx) == 90 and len(val_idx) == 10
    assert not set(train_idx) & set(val_idx)
    again = split_train_val(1000, config)
    np.testing.assert_array_equal(train_idx, again[0])


def test_short_training_lowers_the_loss(digits):
    config = TrainConfig(epochs=3, batch_size=16, seed=1)
    result = train(digits, config, device=CPU, show_progress=False)
    losses = [s.train_loss for s in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.history[-1].val_psnr > result.history[0].val_psnr
    assert result.train_size + result.val_size == len(digits)


def test_training_is_deterministic_given_a_seed(digits):
    config = TrainConfig(epochs=1, batch_size=32, seed=7, train_limit=128)
    a = train(digits, config, device=CPU, show_progress=False).model.state_dict()
    b = train(digits, config, device=CPU, show_progress=False).model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_callbacks_see_every_epoch_and_progress_reaches_one(digits):
    epochs, progress = [], []
    train(digits, TrainConfig(epochs=2, batch_size=64, train_limit=128), device=CPU,
          on_epoch_end=epochs.append, on_progress=progress.append, show_progress=False)
    assert [e.epoch for e in epochs] == [1, 2]
    assert "loss" in epochs[0].line() and "val PSNR" in epochs[0].line()
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, digits):
    config = TrainConfig(epochs=1, batch_size=32, train_limit=64)
    model = train(digits, config, device=CPU, show_progress=False).model
    model_id = checkpoint.model_id_for(config, array_digest(digits))
    saved = checkpoint.save_checkpoint(tmp_path, model_id, model, {"architecture": "conv"})
    found = checkpoint.find_checkpoint(tmp_path, model_id)
    assert found is not None and found.metadata["parameters"] == 121_281
    assert "torch" in found.metadata["versions"]
    restored = checkpoint.load_model(found)
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), restored(x))
    assert saved.weights.name == f"{model_id}.pt"


def test_incomplete_checkpoint_is_ignored(tmp_path):
    (tmp_path / "conv-abc.pt").write_bytes(b"half")
    assert checkpoint.find_checkpoint(tmp_path, "conv-abc") is None


def test_model_id_changes_with_anything_that_changes_the_weights():
    base = checkpoint.model_id_for(TrainConfig(), "data1")
    assert base.startswith("conv-") and base == checkpoint.model_id_for(TrainConfig(), "data1")
    others = {
        checkpoint.model_id_for(TrainConfig(epochs=9), "data1"),
        checkpoint.model_id_for(TrainConfig(noise="gaussian:0.3"), "data1"),
        checkpoint.model_id_for(TrainConfig(seed=1), "data1"),
        checkpoint.model_id_for(TrainConfig(), "data2"),
    }
    assert base not in others and len(others) == 4


def test_train_or_load_trains_once_then_loads(tmp_path, digits):
    np.save(tmp_path / "train.npy", digits)
    config = TrainConfig(epochs=1, batch_size=32, train_limit=64)
    kwargs = dict(train_images=str(tmp_path / "train.npy"), train_sha256=array_digest(digits),
                  config=config, models_dir=tmp_path / "models", device="cpu")
    first = stages.train_or_load(tmp_path / "run1", **kwargs)
    second = stages.train_or_load(tmp_path / "run2", **kwargs)
    forced = stages.train_or_load(tmp_path / "run3", retrain=True, **kwargs)
    assert first["trained"] is True and second["trained"] is False and forced["trained"] is True
    assert first["model_id"] == second["model_id"] == forced["model_id"]


def test_denoise_output_does_not_depend_on_batch_size(digits):
    torch.manual_seed(0)
    from denoiser.model import ConvDAE

    model = ConvDAE()
    images = digits[:23]
    one = denoise(model, images, batch_size=1)
    seven = denoise(model, images, batch_size=7)
    all_at_once = denoise(model, images, batch_size=64)
    np.testing.assert_allclose(one, seven, atol=1e-6, rtol=0)
    np.testing.assert_allclose(one, all_at_once, atol=1e-6, rtol=0)
    assert one.shape == images.shape and one.dtype == np.float32
    assert 0 <= one.min() and one.max() <= 1
