"""Measuring handwriting (slant, size, stroke width) and bringing digits towards another's."""

import numpy as np
import torch

from denoiser.adapt.style_match import StyleMatch, measure, restyle
from tests.helpers import draw_digits


def bars(n: int, *, width: int = 2, slant: float = 0.0, height: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 1, 28, 28) strokes down the middle, ``width`` pixels wide, leaning ``slant`` columns
    per row, with a little jitter of place and length."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 28, 28), np.float32)
    for i in range(n):
        length = height + int(rng.integers(-2, 3))
        top, left = 14 - length // 2, 13 + int(rng.integers(-1, 2))
        for row in range(top, top + length):
            x = left + round(slant * (row - 14))
            out[i, 0, row, x : x + width] = 1.0
    return torch.from_numpy(out)


def test_measure_reads_slant_height_and_stroke_width():
    upright, leaning, broad = (measure(bars(8, width=2)), measure(bars(8, width=2, slant=0.3)),
                               measure(bars(8, width=4)))
    assert np.abs(upright[:, 0]).max() < 0.05
    assert np.allclose(leaning[:, 0], 0.3, atol=0.06)
    assert np.allclose(upright[:, 2], 2.0, atol=0.4) and np.allclose(broad[:, 2], 4.0, atol=0.6)
    assert np.allclose(upright[:, 1], 16 / np.sqrt(12), atol=0.7)  # a uniform bar's standard deviation


def test_restyle_shears_resizes_and_widens_as_asked():
    digits = bars(6, width=2)
    before = measure(digits)
    after = measure(restyle(digits, torch.tensor([[0.3, 1.0, 0.0]] * 6)))
    assert np.allclose(after[:, 0] - before[:, 0], 0.3, atol=0.06)
    after = measure(restyle(digits, torch.tensor([[0.0, 1.4, 0.0]] * 6)))
    assert np.allclose(after[:, 1] / before[:, 1], 1.4, atol=0.08)
    after = measure(restyle(digits, torch.tensor([[0.0, 1.0, 2.0]] * 6)))
    assert (after[:, 2] - before[:, 2] > 1.4).all()


def test_strokes_are_widened_at_the_digits_own_size_then_resized_as_a_scan_would():
    """A broad pen then a smaller scan: the widening is drawn first and softened by the
    resizing, not added as crisp whole pixels afterwards."""
    digits = bars(4, width=2, slant=0.2)
    drawn_then_scanned = restyle(restyle(digits, torch.tensor([[0.0, 1.0, 2.0]] * 4)),
                                 torch.tensor([[0.25, 0.85, 0.0]] * 4))
    assert torch.allclose(restyle(digits, torch.tensor([[0.25, 0.85, 1.7]] * 4)), drawn_then_scanned)
    widened, resized = (restyle(digits, torch.tensor([[0.0, 0.85, widen]] * 4)) for widen in (1.7, 0.0))
    assert np.allclose(measure(widened)[:, 2] - measure(resized)[:, 2], 1.7, atol=0.5)  # in the result's pixels
    assert torch.equal(restyle(digits, torch.tensor([[0.0, 1.0, 0.0]] * 4)), digits)


def test_a_folder_in_the_same_style_leaves_most_digits_exactly_as_they_are():
    train, folder = (torch.from_numpy(draw_digits(400, seed=seed)[0] / np.float32(255))[:, None]
                     for seed in (1, 2))
    match = StyleMatch.fit(train, train, folder)
    assert np.abs(match.changes[:, 0]).mean() < 0.05
    assert np.abs(match.changes[:, 1] - 1).mean() < 0.05
    assert np.abs(match.changes[:, 2]).mean() < 0.4
    unchanged = (match.digits == train).all(dim=(1, 2, 3)).float().mean()
    assert unchanged > 0.4  # small changes are not made: resampling would only blur the digit


def test_digits_are_brought_to_a_broader_more_slanted_hand():
    train = bars(100, width=2, slant=0.0)
    folder = bars(100, width=4, slant=0.3, height=20, seed=1)
    match = StyleMatch.fit(train, train, folder)
    summary = match.summary()
    assert 0.2 < summary["shear"] < 0.4 and 1.1 < summary["size"] < 1.4 and summary["width_px"] > 0.2
    moved, target, before = measure(match.digits), measure(folder), measure(train)
    for k, tolerance in enumerate((0.06, 0.3, 0.4)):  # slant, height, width
        miss = lambda x: abs(np.median(x[:, k]) - np.median(target[:, k]))  # noqa: E731
        assert miss(moved) < tolerance and miss(moved) < miss(before)


def test_what_the_cleaner_adds_on_both_sides_cancels():
    """The folder's shapes and the reference are both seen through the same cleaner: a
    cleaner that thickens everything by the same amount asks for no change."""
    train = bars(60, width=2)
    thickened = restyle(train, torch.tensor([[0.0, 1.0, 2.0]] * 60))
    match = StyleMatch.fit(train, thickened, thickened)
    assert np.abs(match.changes[:, 2]).mean() < 0.3
