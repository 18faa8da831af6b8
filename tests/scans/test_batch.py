"""A batch of scans is cleaned as each scan would be alone, and one bad scan stops only itself."""

import numpy as np
import torch

from denoiser.checks import quality
from denoiser.metrics import noise_sigma
from denoiser.models.infer import denoise_images
from denoiser.models.networks import build_model
from denoiser.scans import batch as scan_batch
from denoiser.scans import restore
from tests.helpers import digit_scan


def scans():
    """Scans of three sizes in both polarities, a blank page and a 3x one."""
    images = [digit_scan((28, 28), seed=i, noise=0.2)[1] for i in range(6)]
    images += [1 - digit_scan((40, 32), seed=9, noise=0.1)[1], np.full((28, 28), 0.8, np.float32),
               digit_scan((84, 84), seed=3, noise=0.3)[1]]
    return [np.asarray(x, np.float32) for x in images]


def test_a_batch_gives_what_each_scan_gives_alone():
    torch.manual_seed(0)
    model = build_model("conv").eval()
    images = scans()
    batch = scan_batch.clean_batch(model, images, headroom=1.25)
    for image, got in zip(images, batch, strict=True):
        mapped, info = restore.prepare(image, headroom=1.25)
        output = denoise_images(model, [mapped])[0]
        sigma, renoised = quality.renoised(mapped, output)
        recheck = denoise_images(model, [renoised])[0]
        cleaned = restore.finish(output, info, image.shape)
        assert (got.info.paper, got.info.ink, got.info.resized) == (info.paper, info.ink, info.resized)
        assert abs(got.info.scale - info.scale) < 1e-9 and got.pixels.shape == image.shape
        np.testing.assert_allclose(got.pixels, cleaned, atol=1e-6)
        assert abs(got.fields["recon_mse"] - float(np.mean((cleaned - image) ** 2))) < 1e-7
        assert abs(got.fields["noise_sigma_out"] - noise_sigma(cleaned)) < 1e-6
        expected = quality.estimated_psnr(mapped, output, recheck, sigma, paper=info.paper, ink=info.ink)
        assert abs(got.fields["psnr_est"] - expected) < 1e-3
        assert got.fields["ood_reason"] == quality.ood_reason(output, sigma)


def test_a_scan_that_fails_a_step_is_its_exception_and_the_rest_go_on():
    model = build_model("conv").eval()
    images = scans()[:3]
    images.insert(1, np.zeros((1, 28, 28), np.float32))  # not a (H, W) image
    results = scan_batch.clean_batch(model, images, headroom=1.25)
    assert isinstance(results[1], ValueError) and "(H, W)" in str(results[1])
    assert all(isinstance(r, scan_batch.Cleaned) for i, r in enumerate(results) if i != 1)
