"""The scan degradation model: spec parsing, determinism, and each component's statistics."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from denoiser.noise import degrade
from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import synthesize
from denoiser.training.loop import training_pair
from tests.helpers import draw_digits


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    images, _ = draw_digits(64, seed=3)
    return torch.from_numpy(images.astype(np.float32) / 255)


def test_scan_specs_parse_and_print_back():
    assert NoiseSpec.parse("scan") == NoiseSpec("scan", 1.0)
    assert str(NoiseSpec.parse(" SCAN ")) == "scan"
    assert str(NoiseSpec.parse("scan:1.5")) == "scan:1.5"
    for bad in ("scan:0", "scan:0.5-1", "scan:x"):
        with pytest.raises(ValueError):
            NoiseSpec.parse(bad)


def test_degradation_ranges_are_checked():
    with pytest.raises(ValueError, match="scale"):
        degrade.Degradation(scale=(1.0, 5.0))
    with pytest.raises(ValueError, match="jpeg|JPEG"):
        degrade.Degradation(jpeg=(10.0, 90.0))
    with pytest.raises(ValueError, match="noise"):
        degrade.Degradation(noise=(0.5, 0.1))


def test_same_seed_same_scans_other_seed_other_scans(digits):
    a = degrade.degrade(digits, degrade.SCAN, rng=rng(1))
    b = degrade.degrade(digits, degrade.SCAN, rng=rng(1))
    c = degrade.degrade(digits, degrade.SCAN, rng=rng(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[1].shape != c[1].shape or not torch.equal(a[1], c[1])


def test_truth_is_the_digit_in_paper_and_ink_tones_both_polarities(digits):
    binary = (digits > 0.5).float()
    truth, degraded = degrade.degrade(binary, degrade.SCAN, rng=rng(4), scale=1.0)
    assert truth.shape == degraded.shape == binary.shape
    dark = 0
    for clean, mask in zip(truth, binary, strict=True):
        paper, ink = clean[mask == 0].unique(), clean[mask == 1].unique()
        assert len(paper) == 1 and len(ink) == 1  # flat paper, flat ink: nothing else
        dark += int(ink < paper)
        assert abs(float(ink - paper)) >= 0.15 * min(float(paper), 1 - float(paper)) - 1e-6
    assert 10 < dark < 54  # both polarities, about half each


def test_resample_scales_size_and_keeps_the_mean(digits):
    big = degrade.resample(digits, 3.0)
    assert big.shape == (64, 84, 84)
    assert abs(float(big.mean() - digits.mean())) < 0.01
    assert degrade.resample(digits, 1.0) is digits


def test_texture_is_zero_mean_low_frequency_and_scales_with_amplitude():
    amplitude = torch.full((200, 1, 1), 0.05)
    texture = degrade.paper_texture((200, 56, 56), amplitude, rng(0))
    assert abs(float(texture.mean())) < 0.005
    assert 0.02 < float(texture.std()) < 0.08
    neighbours = np.corrcoef(texture[:, :, 1:].flatten(), texture[:, :, :-1].flatten())[0, 1]
    assert neighbours > 0.9  # smooth, unlike sensor noise


def test_lighting_is_a_ramp_of_the_drawn_strength():
    strength = torch.full((50, 1, 1), 0.6)
    field = degrade.lighting_field((50, 28, 28), strength, rng(0))
    assert abs(float(field.mean()) - 1) < 1e-3  # as bright on average
    spans = field.flatten(1).amax(1) - field.flatten(1).amin(1)
    assert torch.all(spans > 0.6 * 0.9) and torch.all(spans < 0.6 * math.sqrt(2) + 1e-3)


def test_blur_kernels_are_normalised_gaussian_or_a_line():
    sigma = torch.full((2, 1, 1), 1.0)
    motion = torch.tensor([False, True]).view(2, 1, 1)
    kernels = degrade.blur_kernels(2, sigma, motion, rng(0), 9)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(2))
    r = torch.arange(9, dtype=torch.float32) - 4
    variance = float((kernels[0] * r.view(1, 9) ** 2).sum())
    assert variance == pytest.approx(1.0, rel=0.05)  # sigma^2 along x
    assert 2 <= int((kernels[1] > 0.01).sum()) <= 5  # a line about 3 sigma long


def test_noise_kinds_have_their_statistics():
    flat = torch.full((3, 64, 64), 0.5)
    level = torch.full((3, 1, 1), 0.1)
    gauss = degrade.add_noise(flat, level, torch.zeros(3, 1, 1, dtype=torch.long), rng(0)) - flat
    assert float(gauss.std()) == pytest.approx(0.1, rel=0.05) and abs(float(gauss.mean())) < 0.005
    dark, bright = torch.full((1, 64, 64), 0.0), torch.full((1, 64, 64), 1.0)
    one = torch.full((1, 1, 1), 0.1)
    pg = [float((degrade.add_noise(x, one, torch.ones(1, 1, 1, dtype=torch.long), rng(1)) - x).std())
          for x in (dark, bright)]
    assert pg[1] > 2 * pg[0]  # sensor noise grows with the light
    speckle = degrade.add_noise(dark, one, torch.full((1, 1, 1), 2), rng(2))
    assert torch.equal(speckle, dark)  # multiplicative: none on black


def test_dust_covers_about_the_fraction_asked(digits):
    page = torch.ones(20, 64, 64)
    fraction = torch.full((20, 1, 1), 0.02)
    dusty = degrade.add_dust(page, fraction, torch.ones(20, 1, 1), torch.zeros(20, 1, 1), rng(0))
    hit = float((dusty != page).float().mean())
    assert 0.005 < hit < 0.05


def test_jpeg_round_trip_changes_only_where_asked(digits):
    quality = torch.full((64, 1, 1), 40.0)
    apply = torch.zeros(64, 1, 1, dtype=torch.bool)
    apply[:32] = True
    out = degrade.jpeg(digits, quality, apply)
    assert torch.equal(out[32:], digits[32:])
    error = (out[:32] - digits[:32]).abs()
    assert 0.005 < float(error.mean()) < 0.1


def test_scan_pairs_for_training_and_for_reports(digits):
    spec = NoiseSpec.parse("scan")
    noisy, target = training_pair(digits.unsqueeze(1), spec=spec, rng=rng(0))
    assert noisy.shape == target.shape and noisy.shape[0] == 64 and noisy.shape[1] == 1
    assert float(target.min()) >= 0 and float(target.max()) <= 1
    truth, degraded = synthesize(digits.numpy(), spec=spec, seed=5)
    assert truth.shape == degraded.shape == (64, 28, 28)
    again = synthesize(digits.numpy(), spec=spec, seed=5)
    assert np.array_equal(truth, again[0]) and np.array_equal(degraded, again[1])


def test_large_scans_reach_the_model_at_mnist_scale(digits):
    spec = degrade.Degradation(scale=(3.0, 3.0))
    truth, degraded = degrade.degrade(digits, spec, rng=rng(0))
    assert degraded.shape == (64, 84, 84)
    noisy, target = training_pair(digits.unsqueeze(1), spec=NoiseSpec.parse("scan"), rng=rng(7))
    assert noisy.shape[-1] in range(28, 43)  # shrunk from 1.5x and more; up to 1.5x as drawn


def test_a_printed_pattern_lies_beneath_the_ink_and_never_in_the_truth():
    digits = torch.from_numpy(draw_digits(64, seed=3)[0].astype(np.float32) / 255)
    spec = replace(degrade.SCAN, p_pattern=1.0, p_noise=0.0, p_blur=0.0, p_texture=0.0, p_lighting=0.0,
                   p_dust=0.0, p_jpeg=0.0, p_second_noise=0.0, p_pure=0.0, dark_ink=1.0, p_scale=0.0)
    clean, scan = degrade.degrade(digits, spec, rng=rng(0))
    paper = digits == 0
    assert (clean[paper] - clean[paper].amax()).abs().max() < 0.4  # the truth's paper is one tone per image
    assert ((scan - clean)[paper] < -0.02).float().mean() > 0.05  # the pattern darkens the paper
    ink = digits == 1
    assert torch.allclose(scan[ink], clean[ink], atol=1e-6)  # and the ink hides it
    plain, _ = degrade.degrade(digits, replace(spec, p_pattern=0.0), rng=rng(0))
    assert torch.equal(plain, clean)


def test_a_neighbours_piece_is_ink_in_the_truth_too():
    digits = torch.from_numpy(draw_digits(64, seed=4)[0].astype(np.float32) / 255)
    spec = replace(degrade.SCAN, p_neighbour=1.0, p_pure=1.0, dark_ink=0.0, p_scale=0.0)
    clean, _ = degrade.degrade(digits, spec, rng=rng(1))
    edges = torch.cat([clean[:, :, :4], clean[:, :, -4:]], dim=2)
    assert (edges.amax(dim=(1, 2)) > 0.5).float().mean() > 0.3  # pieces at the edges (none there before)
