import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from denoiser.metrics import BCE_EPS, bce, mse, psnr, ssim


def test_known_values():
    clean = np.zeros((1, 4, 4))
    off = np.full((1, 4, 4), 0.1)
    np.testing.assert_allclose(mse(clean, off), [0.01])
    np.testing.assert_allclose(psnr(clean, off), [20.0])
    assert psnr(clean, clean)[0] == np.inf
    np.testing.assert_allclose(ssim(np.ones((1, 11, 11)) * 0.3, np.ones((1, 11, 11)) * 0.3), [1.0])
    # BCE of a constant 0.5 prediction is log 2 whatever the target.
    np.testing.assert_allclose(bce(np.eye(4)[None], np.full((1, 4, 4), 0.5)), [np.log(2)])
    # Perfect hard predictions cost only the clamping epsilon, never log(0).
    assert bce(np.eye(4)[None], np.eye(4)[None])[0] == pytest.approx(-np.log1p(-BCE_EPS))


def test_against_scikit_image():
    rng = np.random.default_rng(0)
    clean = rng.random((6, 28, 28))
    noisy = np.clip(clean + 0.3 * rng.standard_normal(clean.shape), 0, 1)
    ours_ssim, ours_psnr, ours_mse = ssim(clean, noisy), psnr(clean, noisy), mse(clean, noisy)
    for i in range(len(clean)):
        reference = structural_similarity(clean[i], noisy[i], data_range=1.0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False)
        assert ours_ssim[i] == pytest.approx(reference, abs=1e-9)
        assert ours_psnr[i] == pytest.approx(peak_signal_noise_ratio(clean[i], noisy[i], data_range=1.0))
        assert ours_mse[i] == pytest.approx(mean_squared_error(clean[i], noisy[i]))


def test_bce_against_the_formula():
    rng = np.random.default_rng(1)
    y, p = rng.random((2, 5, 5)), rng.uniform(0.05, 0.95, (2, 5, 5))
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=(1, 2))
    np.testing.assert_allclose(bce(y, p), expected)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        mse(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))
    assert mse(np.zeros((4, 4)), np.ones((4, 4))).shape == (1,)
