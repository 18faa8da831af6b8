import numpy as np
import pytest
import torch

from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import add_noise, noisy_copy


def test_parse_spec_strings():
    assert NoiseSpec.parse("gaussian:0.5") == NoiseSpec("gaussian", 0.5)
    assert str(NoiseSpec.parse(" Salt-Pepper:0.10 ")) == "salt-pepper:0.1"
    assert str(NoiseSpec.parse("poisson:30")) == "poisson:30"


@pytest.mark.parametrize(
    "text, message",
    [
        ("gaussian", "is not KIND:LEVEL"),
        ("blur:1", "unknown noise kind 'blur'"),
        ("gaussian:abc", "is not a number"),
        ("gaussian:-1", ">= 0"),
        ("salt-pepper:1.5", "fraction in \\[0, 1\\]"),
        ("poisson:0", "must be > 0"),
        ("speckle:nan", "finite"),
    ],
)
def test_bad_specs_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        NoiseSpec.parse(text)


@pytest.mark.parametrize("spec", ["gaussian:0.5", "salt-pepper:0.1", "poisson:30", "speckle:0.3"])
def test_same_seed_same_noise_and_bounds(spec):
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    a = noisy_copy(images, spec=NoiseSpec.parse(spec), seed=3)
    b = noisy_copy(images, spec=NoiseSpec.parse(spec), seed=3)
    c = noisy_copy(images, spec=NoiseSpec.parse(spec), seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == images.shape
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_gaussian_is_the_seeds_clip_of_x_plus_f_randn():
    clean = torch.full((200, 28, 28), 0.5)
    noisy = add_noise(clean, spec=NoiseSpec("gaussian", 0.1), rng=torch.Generator().manual_seed(0))
    residual = (noisy - clean).numpy()  # 0.5 +- 0.1 is almost never clipped
    assert abs(residual.mean()) < 0.002
    assert abs(residual.std() - 0.1) < 0.002
    # On black images, half the noise is clipped to 0; PSNR is the tutorial's ~9.4 dB region.
    black = torch.zeros(200, 28, 28)
    out = add_noise(black, spec=NoiseSpec("gaussian", 0.5), rng=torch.Generator().manual_seed(0))
    assert abs(float((out == 0).float().mean()) - 0.5) < 0.01


def test_salt_pepper_fraction_and_balance():
    clean = torch.full((100, 28, 28), 0.5)
    out = add_noise(clean, spec=NoiseSpec("salt-pepper", 0.2), rng=torch.Generator().manual_seed(0))
    hit = out != 0.5
    assert abs(float(hit.float().mean()) - 0.2) < 0.01
    assert abs(float((out == 1).float().mean()) - 0.1) < 0.01
    assert set(torch.unique(out[hit]).tolist()) == {0.0, 1.0}


def test_poisson_mean_and_variance_follow_the_peak():
    clean = torch.full((100, 28, 28), 0.25)
    peak = 40.0
    out = add_noise(clean, spec=NoiseSpec("poisson", peak), rng=torch.Generator().manual_seed(0))
    counts = (out * peak).numpy()  # Poisson(10) counts, rarely clipped at 40
    assert abs(counts.mean() - 10) < 0.1
    assert abs(counts.var() - 10) < 0.4
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


def test_speckle_scales_with_intensity():
    clean = torch.cat([torch.full((100, 28, 28), 0.2), torch.zeros(100, 28, 28)])
    out = add_noise(clean, spec=NoiseSpec("speckle", 0.3), rng=torch.Generator().manual_seed(0))
    assert abs(float((out[:100] - 0.2).std()) - 0.06) < 0.002
    assert torch.equal(out[100:], clean[100:])  # no signal, no speckle


def test_a_range_gives_each_image_its_own_level():
    spec = NoiseSpec.parse("gaussian:0.1-0.7")
    assert (spec.level, spec.high) == (0.1, 0.7) and str(spec) == "gaussian:0.1-0.7"
    clean = torch.full((400, 28, 28), 0.5)
    noisy = add_noise(clean, spec=spec, rng=torch.Generator().manual_seed(0))
    stds = (noisy - clean).flatten(1).std(dim=1)  # clipping at 0 and 1 shrinks the high ones
    assert 0.08 < stds.min() < 0.15 and 0.35 < stds.max() < 0.5
    assert stds.std() > 0.05  # spread over the range, not one level
    with pytest.raises(ValueError, match="runs backwards"):
        NoiseSpec.parse("gaussian:0.7-0.1")
    with pytest.raises(ValueError, match="salt-pepper level is a fraction"):
        NoiseSpec.parse("salt-pepper:0.1-2")

