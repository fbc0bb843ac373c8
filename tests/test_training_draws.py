"""The training draws: the sigma samplers' distributions, the conditioning-dropout ranges and the
hand-region weight on a synthetic box."""

from __future__ import annotations

import math

import jax
import numpy as np
import torch

from controlnext_jax.sampling.scheduler import SchedulerConfig, make_sigmas
from controlnext_jax.training.dropout import keep_masks
from controlnext_jax.training.hand_mask import draw_hand_canvas, hand_weight, pool_to_latent
from controlnext_jax.training.sigmas import CosineInterpolated, Karras, LogNormal

N = 200_000


def _cosine_interpolated_sigma(u: np.ndarray) -> np.ndarray:
    """The release's sampler written out in float64 NumPy: sigma as a function of its uniform u."""
    sd, lo_d, hi_d, image_d = 0.5, 32.0, 64.0, 64.0
    logsnr_a, logsnr_b = -2 * math.log(0.002 / sd), -2 * math.log(700.0 / sd)

    def shifted(noise_d):
        shift = 2 * math.log(noise_d / image_d)
        t0 = math.atan(math.exp(-0.5 * (logsnr_b - shift)))
        t1 = math.atan(math.exp(-0.5 * (logsnr_a - shift)))
        return -2 * np.log(np.tan(t0 + u * (t1 - t0))) + shift

    return np.exp(-(shifted(lo_d) + u * (shifted(hi_d) - shifted(lo_d))) / 2) * sd


def test_cosine_interpolated_quantiles_match_the_inverse_cdf():
    sigmas = np.asarray(CosineInterpolated()(jax.random.key(0), (N,)), np.float64)
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    expected = _cosine_interpolated_sigma(1.0 - q)  # sigma falls as u rises
    # log-quantiles: the sampling error of a quantile from 2e5 draws is ~1% at these levels
    np.testing.assert_allclose(np.log(np.quantile(sigmas, q)), np.log(expected), atol=0.03)
    assert sigmas.min() >= 0.002 * 0.999 and sigmas.max() <= 700 * 1.001
    np.testing.assert_allclose(_cosine_interpolated_sigma(np.array([0.0, 1.0])), [700.0, 0.002], rtol=1e-12)


def test_log_normal_moments():
    log_sigma = np.log(np.asarray(LogNormal()(jax.random.key(1), (N,)), np.float64))
    assert abs(log_sigma.mean() - 0.7) < 0.02 and abs(log_sigma.std() - 1.6) < 0.02


def test_karras_draws_where_the_sampler_steps():
    # at t = k / (n - 1) the ramp is animate's n-step schedule (its final zero aside)
    n = 25
    sampler_sigmas = make_sigmas(SchedulerConfig(), n)[0][:n]
    ramp = np.asarray(Karras().sigma_of_t(np.linspace(0.0, 1.0, n, dtype=np.float32)), np.float64)
    np.testing.assert_allclose(ramp, sampler_sigmas, rtol=1e-5)  # float32 pow against float64
    # the draws: sigma falls as t rises, so the q-quantile is the ramp at t = 1 - q (2e5 draws, as above)
    sigmas = np.asarray(Karras()(jax.random.key(2), (N,)), np.float64)
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    inv_max, inv_min = 700.0 ** (1 / 7), 0.002 ** (1 / 7)
    expected = (inv_max + (1.0 - q) * (inv_min - inv_max)) ** 7
    np.testing.assert_allclose(np.log(np.quantile(sigmas, q)), np.log(expected), atol=0.03)
    assert 0.45 < (sigmas > 12.0).mean() < 0.55  # half the draws above 12, as the sampler's steps


def test_dropout_ranges():
    r = np.array([0.0, 0.0999, 0.1, 0.1999, 0.2, 0.2999, 0.3, 0.9], np.float32)
    keep_embedding, keep_image = map(np.asarray, keep_masks(r))
    np.testing.assert_array_equal(keep_embedding, [0, 0, 0, 0, 1, 1, 1, 1])  # dropped when r < 0.2
    np.testing.assert_array_equal(keep_image, [1, 1, 0, 0, 0, 0, 1, 1])  # dropped when 0.1 <= r < 0.3
    # the shares over U(0, 1): 10% embedding only, 10% both, 10% latents only
    keep_embedding, keep_image = map(np.asarray, keep_masks(jax.random.uniform(jax.random.key(2), (N,))))
    both = np.mean((keep_embedding == 0) & (keep_image == 0))
    assert abs(np.mean(keep_embedding == 0) - 0.2) < 0.005 and abs(np.mean(keep_image == 0) - 0.2) < 0.005
    assert abs(both - 0.1) < 0.005


def test_hand_weight_on_a_synthetic_box():
    # a 100x80 (H x W) video, 2 frames; frame 1 holds a confident hand and a low-score one
    boxes = [[((0.25, 0.5), (0.5, 0.6))], [((0.25, 0.5), (0.5, 0.6)), ((0.8, 0.0), (0.9, 0.05))]]
    scores = [[[0.9, 0.8]], [[0.9, 0.8], [0.3, 0.4]]]
    canvas = draw_hand_canvas(boxes, scores, 100, 80)
    expected = np.zeros((2, 100, 80), np.float32)
    expected[:, 40:70, 10:50] = 0.8  # rows 50-10..60+10, columns 20-10..40+10
    np.testing.assert_array_equal(canvas, expected)

    weight = hand_weight(canvas, (64, 48))
    assert np.all(weight[0] == 1.0)  # the reference frame is never up-weighted
    ref = torch.nn.functional.interpolate(torch.from_numpy(canvas)[:, None], size=(64, 48), mode="bilinear",
                                          align_corners=False, antialias=True)[:, 0].numpy()
    np.testing.assert_allclose(weight[1], 1.0 + 4.0 * ref[1], atol=1e-6)
    assert abs(weight[1].max() - 4.2) < 1e-5 and weight[1].min() == 1.0  # resampling weights sum to 1 +- ulp

    pooled = np.asarray(pool_to_latent(weight[None], (8, 6)))[0, ..., 0]
    torch_pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(weight), (8, 6)).numpy()
    np.testing.assert_allclose(pooled, torch_pooled, rtol=1e-6)
