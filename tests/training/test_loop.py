import numpy as np
import pytest
import torch

from denoiser.data.mnist import array_digest
from denoiser.models import checkpoint
from denoiser.models.infer import denoise
from denoiser.models.recipe import TrainConfig, model_id_for
from denoiser.pipeline import train_stage
from denoiser.training.loop import split_train_val, train
from tests.helpers import draw_digits

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
    config = TrainConfig(model="conv", epochs=3, batch_size=16, seed=1)
    result = train(digits, config, device=CPU, show_progress=False)
    losses = [s.train_loss for s in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.history[-1].val_psnr > result.history[0].val_psnr
    assert result.train_size + result.val_size == len(digits)


def test_training_is_deterministic_given_a_seed(digits):
    config = TrainConfig(model="conv", epochs=1, batch_size=32, seed=7, train_limit=128)
    a = train(digits, config, device=CPU, show_progress=False).model.state_dict()
    b = train(digits, config, device=CPU, show_progress=False).model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_callbacks_see_every_epoch_and_progress_reaches_one(digits):
    epochs, progress = [], []
    train(digits, TrainConfig(model="conv", epochs=2, batch_size=64, train_limit=128), device=CPU,
          on_epoch_end=epochs.append, on_progress=progress.append, show_progress=False)
    assert [e.epoch for e in epochs] == [1, 2]
    assert "loss" in epochs[0].line() and "val PSNR" in epochs[0].line()
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, digits):
    config = TrainConfig(model="conv", epochs=1, batch_size=32, train_limit=64)
    model = train(digits, config, device=CPU, show_progress=False).model
    model_id = model_id_for(config, array_digest(digits))
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
    base = model_id_for(TrainConfig(), "data1")
    assert base.startswith("unet-") and base == model_id_for(TrainConfig(), "data1")
    others = {
        model_id_for(TrainConfig(epochs=9), "data1"),
        model_id_for(TrainConfig(noise="gaussian:0.3"), "data1"),
        model_id_for(TrainConfig(seed=1), "data1"),
        model_id_for(TrainConfig(), "data2"),
    }
    assert base not in others and len(others) == 4


def test_train_or_load_trains_once_then_loads(tmp_path, digits):
    np.save(tmp_path / "train.npy", digits)
    config = TrainConfig(model="conv", epochs=1, batch_size=32, train_limit=64)
    kwargs = dict(train_images=str(tmp_path / "train.npy"), train_sha256=array_digest(digits),
                  config=config, models_dir=tmp_path / "models", device="cpu")
    first = train_stage.train_or_load(tmp_path / "run1", **kwargs)
    second = train_stage.train_or_load(tmp_path / "run2", **kwargs)
    forced = train_stage.train_or_load(tmp_path / "run3", retrain=True, **kwargs)
    assert first["trained"] is True and second["trained"] is False and forced["trained"] is True
    assert first["model_id"] == second["model_id"] == forced["model_id"]


def test_denoise_output_does_not_depend_on_batch_size(digits):
    torch.manual_seed(0)
    from denoiser.models.networks import ConvDAE

    model = ConvDAE()
    images = digits[:23]
    one = denoise(model, images, batch_size=1)
    seven = denoise(model, images, batch_size=7)
    all_at_once = denoise(model, images, batch_size=64)
    np.testing.assert_allclose(one, seven, atol=1e-6, rtol=0)
    np.testing.assert_allclose(one, all_at_once, atol=1e-6, rtol=0)
    assert one.shape == images.shape and one.dtype == np.float32
    assert 0 <= one.min() and one.max() <= 1


def test_each_model_has_its_recipe_and_options_override_it():
    seed = TrainConfig.recipe("conv")
    assert (seed.epochs, seed.learning_rate, seed.loss, seed.schedule, seed.keep_best) == (
        10, 1e-3, "bce", "constant", False)
    default = TrainConfig.recipe()
    assert default.model == "unet" and default.schedule == "cosine" and default.keep_best
    assert default == TrainConfig()  # the dataclass defaults are the default model's recipe
    assert TrainConfig.recipe("unet", epochs=3, loss=None).epochs == 3
    assert TrainConfig.recipe("unet", loss=None).loss == default.loss  # None means "the recipe's"
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        TrainConfig.recipe("unet", loss="huber")
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="step")


@pytest.mark.parametrize("loss", ["bce", "mse", "l1"])
def test_every_loss_and_the_cosine_schedule_train(digits, loss):
    config = TrainConfig.recipe("unet", epochs=2, batch_size=16, loss=loss, train_limit=160, seed=2)
    result = train(digits, config, device=CPU, show_progress=False)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert all(np.isfinite(e.val_psnr) for e in result.history)


def test_keep_best_ends_with_the_best_validation_epoch(digits):
    from denoiser.data.arrays import to_model_input
    from denoiser.metrics import psnr
    from denoiser.noise.spec import NoiseSpec
    from denoiser.noise.synthetic import add_noise

    # A rate this high makes later epochs worse, so the best epoch is not the last.
    config = TrainConfig(model="conv", epochs=3, batch_size=16, learning_rate=0.05, keep_best=True, seed=4)
    result = train(digits, config, device=CPU, show_progress=False)
    _, val_idx = split_train_val(len(digits), config)
    val_x = to_model_input(digits[val_idx])
    noisy = add_noise(val_x, spec=NoiseSpec.parse(config.noise), rng=torch.Generator().manual_seed(5))
    out = denoise(result.model, noisy.squeeze(1).numpy())
    assert psnr(val_x.squeeze(1).numpy(), out).mean() == pytest.approx(
        max(e.val_psnr for e in result.history), abs=1e-3)


def test_channels_last_training_matches_the_plain_layout(digits):
    """The fast layout computes the same step as plain NCHW, within float tolerance."""
    from torch.nn import functional as F

    from denoiser.models.networks import build_model

    torch.manual_seed(0)
    plain = build_model("conv")
    fast = build_model("conv")
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.from_numpy(digits[:32].astype(np.float32) / 255).unsqueeze(1)
    for model in (plain, fast):
        F.binary_cross_entropy_with_logits(model(x), x).backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_batched_denoising_matches_one_image_at_a_time_in_eager_nchw(digits):
    from denoiser.models.networks import build_model

    torch.manual_seed(0)
    model = build_model("unet").eval()
    images = digits[:9]
    with torch.no_grad():
        plain = [torch.sigmoid(model(torch.from_numpy(im.astype(np.float32) / 255)[None, None]))[0, 0].numpy()
                 for im in images]
    np.testing.assert_allclose(denoise(model, images, batch_size=512), np.stack(plain), atol=1e-5, rtol=0)


def test_folder_denoising_of_digit_sized_images_matches_the_mnist_path(digits):
    """denoise_images (folders, any size) and denoise (MNIST arrays) agree on 28x28 digits."""
    from denoiser.models.infer import denoise_images
    from denoiser.models.networks import build_model

    torch.manual_seed(0)
    model = build_model("unet")
    images = [d.astype(np.float32) / 255 for d in digits[:5]]
    np.testing.assert_allclose(np.stack(denoise_images(model, images)), denoise(model, np.stack(images)),
                               atol=1e-5, rtol=0)


def test_bf16_buys_the_default_model_more_steps_but_not_the_tutorials():
    fast, plain = TrainConfig.recipe("unet", bf16=True), TrainConfig.recipe("unet")
    assert (fast.epochs, fast.batch_size) == (13, 32) and (plain.epochs, plain.batch_size) == (8, 128)
    tutorial = TrainConfig.recipe("conv", bf16=True)  # the tutorial's recipe is the tutorial's
    assert (tutorial.epochs, tutorial.batch_size) == (10, 128)
    assert TrainConfig.recipe("unet", bf16=True, epochs=3, batch_size=16).batch_size == 16  # what the user sets wins
    scan = TrainConfig.recipe("unet", bf16=True, noise="scan")  # the scan recipe: not measured
    assert (scan.epochs, scan.batch_size) == (4, 128)


def test_the_first_clean_s_estimate_comes_from_a_short_measurement_of_the_recipe():
    import time

    from denoiser.pipeline.train_stage import CHECKS_FACTOR, estimate_training_seconds, probe_images_per_second

    config = TrainConfig.recipe("conv", epochs=3, batch_size=32)
    started = time.perf_counter()
    alone = estimate_training_seconds(config, train_images=32_000, device="cpu", with_checks=False)
    assert time.perf_counter() - started < 30  # a probe, not the training
    # 3 epochs of 32,000 images at the pace of a few hundred to a few thousand images/s.
    assert 3 * 32_000 / 50_000 < alone < 3 * 32_000 / 50
    # The pace is measured (two probes on a machine shared with other tests differ by up to
    # 2x); what follows from one pace is arithmetic.
    pace = probe_images_per_second(config, device="cpu")
    assert 50 < pace < 50_000
    assert estimate_training_seconds(config, train_images=32_000, with_checks=False,
                                     images_per_second=pace) == pytest.approx(3 * 32_000 / pace)
    assert estimate_training_seconds(config, train_images=32_000, images_per_second=pace) == pytest.approx(
        3 * 32_000 / pace * (1 + CHECKS_FACTOR))
