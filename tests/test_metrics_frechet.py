"""Frechet distance against closed forms for Gaussians with known means and covariances."""

import numpy as np
import pytest
import scipy.linalg

from controlnext_jax.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def test_diagonal_closed_form():
    mu1, mu2 = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 0.5])
    s1, s2 = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)  # = 10 + 1 + 4 = 15
    assert expected == pytest.approx(15.0)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_commuting_covariances_closed_form():
    # same eigenvectors: d = |dmu|^2 + sum (sqrt(l1) - sqrt(l2))^2
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    l1, l2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(l1) @ q.T, mu2, q @ np.diag(l2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)


def test_general_and_rank_deficient_match_sqrtm_formula():
    rng = np.random.default_rng(1)
    for rank in (None, 3):  # full rank, and rank 3 in 8 dims (fewer clips than features)
        s1, s2 = _random_spd(rng, 8, rank), _random_spd(rng, 8, rank)
        mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_identical_sets_give_zero_and_stats_are_float64_unbiased():
    x = np.random.default_rng(2).standard_normal((50, 5)).astype(np.float32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    assert abs(frechet_distance_from_features(x, x)) < 1e-9


def test_sample_estimate_approaches_population_value():
    rng = np.random.default_rng(3)
    mu1, mu2 = np.zeros(4), np.full(4, 0.5)
    s1, s2 = np.diag([1.0, 2.0, 0.5, 1.0]), np.diag([2.0, 1.0, 0.5, 4.0])
    expected = frechet_distance(mu1, s1, mu2, s2)
    a = rng.multivariate_normal(mu1, s1, 200_000)
    b = rng.multivariate_normal(mu2, s2, 200_000)
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=0.02)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="n >= 2"):
        gaussian_stats(np.zeros((1, 3)))
