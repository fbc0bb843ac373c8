"""PSNR / SSIM / L1 against scikit-image, and the float (not uint8-wrapping) L1."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from controlnext_jax.metrics.frame_metrics import l1, psnr, ssim


def _pair(seed=0, shape=(3, 37, 52, 3)):
    rng = np.random.default_rng(seed)
    # smooth content plus noise: local statistics vary across the frame
    base = rng.integers(0, 256, shape).astype(np.float64)
    base = (base + np.roll(base, 1, 1) + np.roll(base, 1, 2) + np.roll(base, 2, 2)) / 4
    a = np.clip(base, 0, 255).astype(np.uint8)
    b = np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("gaussian_weights", [False, True])
def test_ssim_matches_skimage(gaussian_weights):
    a, b = _pair()
    ours = ssim(a, b, gaussian_weights=gaussian_weights)
    ref = [structural_similarity(a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=gaussian_weights)
           for i in range(len(a))]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-14)  # the same float64 operations
    assert 0.2 < ours.min() < ours.max() < 0.99


def test_ssim_without_sample_covariance_matches_skimage():
    a, b = _pair(1)
    ours = ssim(a, b, gaussian_weights=True, use_sample_covariance=False)
    ref = [structural_similarity(a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for i in range(len(a))]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-14)


def test_psnr_matches_skimage():
    a, b = _pair(2)
    ref = [peak_signal_noise_ratio(a[i], b[i], data_range=255) for i in range(len(a))]
    np.testing.assert_allclose(psnr(b, a), ref, rtol=1e-12)
    assert np.isinf(psnr(a, a)).all()


def test_l1_is_float_not_uint8_wraparound():
    a = np.full((1, 8, 8, 3), 10, np.uint8)
    b = np.full((1, 8, 8, 3), 200, np.uint8)
    # uint8 a - b wraps to 66; the right value is 190 / 255
    assert l1(a, b)[0] == pytest.approx(190 / 255)
    assert np.mean(np.abs(a - b)) / 255 == pytest.approx(66 / 255)  # the wrong variant, for contrast


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="one shape"):
        psnr(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
