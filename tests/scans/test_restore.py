"""Tone- and scale-aware cleaning: levels, polarity, the tone round trip, stroke width."""

import numpy as np
import pytest
import torch

from denoiser.models.networks import build_model
from denoiser.noise import degrade
from denoiser.scans import restore, strokes, tones
from tests.helpers import draw_digits


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    images, _ = draw_digits(48, seed=5)
    return images.astype(np.float32) / 255


def scans(digits: np.ndarray, *, paper: float, ink: float) -> torch.Tensor:
    x = torch.from_numpy(digits)
    return degrade.render_tone(x, paper=torch.tensor(paper), ink=torch.tensor(ink))


def test_tone_map_round_trip_returns_a_clean_scan_within_one_level(digits):
    for paper, ink in ((0.0, 1.0), (0.9, 0.1), (0.8, 0.55), (0.2, 0.6), (1.0, 0.0)):
        scan = scans(digits, paper=paper, ink=ink)
        p, i = tones.estimate_levels(scan)
        back = tones.from_model(tones.to_model(scan, p, i), p, i)
        assert float((back - scan).abs().max()) <= 1 / 255, (paper, ink)


def test_levels_hold_under_clipped_noise(digits):
    clean = torch.from_numpy(digits)
    noisy = (clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    paper, ink = tones.estimate_levels(noisy, headroom=1.0)
    assert float(paper.abs().max()) < 0.02  # the median, not the 0.2 that clipped noise averages
    assert float(ink.min()) > 0.8


def test_polarity_is_found_on_faint_noisy_scans(digits):
    generator = torch.Generator().manual_seed(1)
    for paper, ink in ((0.75, 0.62), (0.3, 0.42)):  # contrast 0.12 on grey paper, both polarities
        scan = scans(digits, paper=paper, ink=ink)
        noisy = (scan + 0.03 * torch.randn(scan.shape, generator=generator)).clamp(0, 1)
        p, i = tones.estimate_levels(noisy)
        right = ((i < p) == (ink < paper)).float().mean()
        assert float(right) >= 0.95, (paper, ink)
        info = restore.prepare(noisy[0].numpy())[1]
        assert info.inverted == (ink < paper)


def test_normalize_gives_pure_paper_and_full_ink_in_the_scan_polarity():
    out = np.array([[0.0, 1.0]], dtype=np.float32)
    dark = restore.ScanInfo(paper=0.8, ink=0.3, scale=1.0, resized=False)
    light = restore.ScanInfo(paper=0.1, ink=0.7, scale=1.0, resized=False)
    assert restore.finish(out, dark, (1, 2), tone="normalize").tolist() == [[1.0, 0.0]]
    assert restore.finish(out, light, (1, 2), tone="normalize").tolist() == [[0.0, 1.0]]
    kept = restore.finish(out, dark, (1, 2), tone="keep")
    np.testing.assert_allclose(kept, [[0.8, 0.3]], atol=1e-6)
    # A model trained with headroom puts the measured ink at 1 / headroom: full ink again.
    roomy = restore.ScanInfo(paper=0.9, ink=0.15, scale=1.0, resized=False, headroom=1.25)
    np.testing.assert_allclose(restore.finish(np.array([[0.0, 0.8]], dtype=np.float32), roomy, (1, 2),
                                              tone="normalize"), [[1.0, 0.0]], atol=1e-6)


def test_stroke_width_follows_scale_under_noise_and_lighting(digits):
    x = torch.from_numpy(digits)
    generator = torch.Generator().manual_seed(2)
    widths = {}
    for scale in (1.0, 3.0):
        big = degrade.resample(x, scale)
        noisy = (big + 0.3 * torch.randn(big.shape, generator=generator)).clamp(0, 1)
        widths[scale] = np.median([strokes.stroke_width(image.numpy()) for image in noisy])
    assert 2.4 < widths[3.0] / widths[1.0] < 3.6
    lit = x * degrade.lighting_field(tuple(x.shape), torch.full((48, 1, 1), 0.8), generator)
    lit_widths = np.median([strokes.stroke_width(image.numpy()) for image in lit])
    assert lit_widths < 1.3 * np.median([strokes.stroke_width(image.numpy()) for image in x])


def test_a_3x_scan_is_cleaned_at_mnist_scale_and_keeps_its_stroke_width(digits):
    big = degrade.resample(torch.from_numpy(digits), 3.0)
    page = 1.0 - 0.9 * big  # dark ink on white paper, 84x84
    mapped, info = restore.prepare(page[0].numpy())
    assert info.resized and info.inverted and restore.RESCALE_ABOVE <= info.scale < 4.0
    assert mapped.shape[0] <= 84 / restore.RESCALE_ABOVE  # shrunk towards MNIST's scale
    torch.manual_seed(0)
    model = build_model("unet")
    outputs, infos = restore.restore(model, list(page.numpy()[:8]))
    assert all(o.shape == (84, 84) for o in outputs)
    # The scaling path alone (what the model sees, enlarged back) keeps the strokes' width.
    for image in page.numpy()[:8]:
        mapped, info = restore.prepare(image)
        back = restore.finish(mapped, info, image.shape, tone="keep")
        width_in, width_out = strokes.stroke_width(1.0 - image), strokes.stroke_width(1.0 - back)
        assert width_out == pytest.approx(width_in, rel=0.15)


def light_band_cheque(digits: np.ndarray) -> torch.Tensor:
    """Dark ink (0.30) on grey paper (0.58) with a light band (0.90) along the top edge,
    further from the paper than the ink is: white paper beyond a cheque's printed field."""
    scan = scans(digits, paper=0.58, ink=0.30)
    scan[:, :3, :] = 0.90  # three rows of 28: about as much of the scan as the ink covers
    return (scan + 0.02 * torch.randn(scan.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)


def test_a_light_band_at_the_edge_does_not_flip_the_ink(digits):
    scan = light_band_cheque(digits)
    paper, ink = tones.estimate_levels(scan)
    assert float((ink < paper).float().mean()) >= 0.95  # dark ink, as written
    assert float((paper - 0.58).abs().max()) < 0.05


class Identity(torch.nn.Module):
    """A 'model' that gives back what it sees (as logits): its output is blank exactly where
    the scan in the model's look shows no ink."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x, eps=1e-6)


def test_an_output_that_lost_its_digit_is_cleaned_again_with_the_other_polarity(digits):
    page = (1.0 - 0.9 * torch.from_numpy(digits[:3])).numpy()  # dark ink on white paper
    images = [page[0], page[1], np.full((28, 28), 0.8, np.float32), np.ones((28, 28), np.float32)]
    prepared = restore.prepare_many(images, dark_ink=[False, True, False, True])  # the first misread
    assert restore.ink_share(prepared[0][0]) < restore.BLANK_INK
    outputs = [torch.sigmoid(Identity()(torch.from_numpy(m))).numpy() for m, _ in prepared]
    kept = restore.retry_blank(Identity(), images, prepared, outputs, headroom=tones.HEADROOM)
    assert kept == [0]  # the misread scan; not the blank pages, whose retry finds no ink either
    assert prepared[0][1].inverted and restore.ink_share(outputs[0]) >= restore.RETRY_INK
    np.testing.assert_allclose(outputs[0], prepared[0][0], atol=1e-5)
