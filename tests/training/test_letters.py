"""Letters drawn by a pen: the non-digits the digit-shape model learns most from."""

import numpy as np

from denoiser.training import letters


def test_every_skeleton_is_drawn_as_ink_on_paper_inside_the_frame():
    rng = np.random.default_rng(0)
    for name, strokes in letters.SKELETONS.items():
        image = letters.draw(strokes, rng)
        assert image.shape == (28, 28) and image.dtype == np.float32, name
        assert image.max() == 1.0 and image.min() == 0.0, name
        ink = np.argwhere(image > 0.5)
        assert 20 < len(ink) < 400, f"{name}: {len(ink)} ink pixels"
        assert ink.min() >= 2 and ink.max() <= 25, f"{name} reaches the edge"  # a 20 px box in 28


def test_no_two_drawings_of_a_letter_are_the_same_and_a_seed_repeats_them():
    a = letters.pen_letters(50, np.random.default_rng(3))
    b = letters.pen_letters(50, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    twice = [letters.draw(letters.SKELETONS["K"], np.random.default_rng(s)) for s in (1, 2)]
    assert np.abs(twice[0] - twice[1]).mean() > 0.02


def test_letters_that_are_a_digit_shape_are_left_out():
    assert not set("OoIliZzSs") & set(letters.SKELETONS)
