"""Quality without ground truth: the estimated PSNR on images whose error is known, and the
flag for images unlike the training digits."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from denoiser.checks import quality
from denoiser.metrics import psnr
from tests.helpers import draw_digits


def digits(n=20, seed=0):
    return draw_digits(n, seed=seed)[0].astype(np.float32) / 255 * 0.8  # ink at 0.8, as in the model's look


def noisy(x, sigma, seed=0):
    return np.clip(x + sigma * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32), 0, 1)


@pytest.mark.parametrize("sigma, error", [(0.2, 0.03), (0.5, 0.08)])
def test_the_estimate_follows_a_known_error(sigma, error):
    rng = np.random.default_rng(1)
    for x in digits(10):
        y = noisy(x, sigma)
        output = np.clip(x + error * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
        recheck = np.clip(output + error * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
        level, _ = quality.renoised(y, output)
        assert level == pytest.approx(sigma, rel=0.2)
        estimate = quality.estimated_psnr(y, output, recheck, level, paper=0.0, ink=1.0)
        assert estimate == pytest.approx(float(psnr(x[None], output[None])[0]), abs=1.5)


def test_an_output_that_lost_the_digit_scores_low():
    for x in digits(5):
        y = noisy(x, 0.3)
        flat = np.zeros_like(x)  # the digit erased, and the model sure of it
        estimate = quality.estimated_psnr(y, flat, flat, 0.3, paper=0.0, ink=1.0)
        good = quality.estimated_psnr(y, x, x, 0.3, paper=0.0, ink=1.0)
        assert estimate < good - 8
        assert estimate < float(psnr(x[None], flat[None])[0]) + 5  # measured: 3-4 dB above the truth


def test_the_flag_names_blank_pages_strong_noise_and_photos_but_not_digits():
    for x in digits(20):
        assert quality.ood_reason(x, 0.3) is None
    assert quality.ood_reason(np.zeros((28, 28), np.float32), 0.1).startswith("blank")
    assert quality.ood_reason(digits(1)[0], 0.9).startswith("noise 0.90 beyond")
    field = F.interpolate(torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(0)), size=(28, 28),
                          mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()
    field = 0.1 + 0.5 * field  # greys everywhere, no ink on paper
    assert quality.ood_reason(field, 0.1).startswith("tones of a photo")


def test_the_noise_level_is_unknown_where_a_scan_has_too_little_paper_to_measure_it():
    """A report's noise_level: measured on noisy paper, 0 on clean paper, and empty (NaN),
    not 0, on a scan that is nearly all ink: nothing says its paper is clean."""
    x = digits(1)[0]
    inked = np.full((28, 28), 0.8, np.float32)
    inked[:6, :6] = 0.0  # 36 pixels of paper, too few to measure its noise
    scans = [noisy(x, 0.4), x, noisy(inked, 0.4)]
    outputs = [x, x, inked]
    sigmas = [quality.clipped_noise_level(s, o) for s, o in zip(scans, outputs, strict=True)]
    rows = quality.assess(scans, outputs, outputs, sigmas, [1.0, 1.0, 1.0])
    assert rows[0]["noise_level"] == pytest.approx(0.4, rel=0.2)
    assert rows[1]["noise_level"] == 0.0
    assert np.isnan(rows[2]["noise_level"]) and sigmas[2] == 0.0
