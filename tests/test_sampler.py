"""The window sampler's host tables and lax loops, against plain-Python loops, with a toy denoiser.

No networks here: a cheap denoiser that depends on the window's pose slots and on its
frame context, so a wrong window layout, pose replacement, fusion or skip rule shows.
The networks' part is in test_pipeline.py (against the torch reference of the release).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controlnext_jax.pipeline.sharding import windows_per_call_for
from controlnext_jax.pipeline.validation import AnimateParams, validate_params
from controlnext_jax.sampling.denoiser import guide, v_prediction_denoiser
from controlnext_jax.sampling.fusion import FUSION_MODES, frame_totals, normalized_weights, window_weights
from controlnext_jax.sampling.sampler import sample_windows
from controlnext_jax.sampling.scheduler import SchedulerConfig, euler_step, make_sigmas
from controlnext_jax.sampling.window_plan import plan_windows
from controlnext_jax.sampling.windows import window_starts

LAYOUTS = [(9, 4, 1), (7, 7, 0), (10, 6, 2), (11, 6, 2), (5, 8, 2), (30, 14, 4), (40, 24, 6), (25, 24, 6),
           (20, 8, 5)]


# ---------------------------------------------------------------------------------- fusion weights


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("frames,batch,overlap", LAYOUTS)
def test_normalized_weights_sum_to_one_per_frame(mode, frames, batch, overlap):
    batch = min(batch, frames)
    starts = window_starts(frames, batch, overlap)
    weights = normalized_weights(starts, batch, frames, mode)
    per_frame = np.zeros(frames)
    for start, w in zip(starts, weights):
        per_frame[start:start + batch] += w
    np.testing.assert_allclose(per_frame, 1.0, rtol=0, atol=1e-12)  # float64 sums of a few terms
    # the reference-pose slot of every later window never counts
    assert np.all(weights[1:, 0] == 0) and np.all(weights[0] > 0)


@pytest.mark.parametrize("frames,batch,overlap", LAYOUTS)
def test_uniform_is_the_release_count_mean(frames, batch, overlap):
    batch = min(batch, frames)
    starts = window_starts(frames, batch, overlap)
    count = np.zeros(frames)
    for i, start in enumerate(starts):
        lo = start if i == 0 else start + 1  # the release: later windows skip their first frame
        count[lo:start + batch] += 1
    weights = window_weights(starts, batch, "uniform")
    assert set(np.unique(weights)) <= {0.0, 1.0}
    np.testing.assert_array_equal(frame_totals(starts, weights, frames), count)


def test_triangular_peaks_in_the_middle_and_stays_positive():
    w = window_weights([0, 10], 12, "triangular")
    assert np.all(w[0] > 0) and w[1, 0] == 0 and np.all(w[1, 1:] > 0)
    assert np.argmax(w[0]) in (5, 6) and w[0, 0] == w[0, -1] == pytest.approx(1 / 12)
    np.testing.assert_allclose(w[0], w[0][::-1])  # symmetric over its 12 contributing slots
    np.testing.assert_allclose(w[1, 1:], w[1, 1:][::-1])  # ... and over the later window's 11


def test_overlap_linear_cross_fades_inside_the_overlap_only():
    # 20 frames, windows of 8 overlapping by 3: starts 0, 5, 10, 12 (the last clamped); a later
    # window contributes from start + 1, so windows 0 and 1 share frames 6 and 7
    starts = window_starts(20, 8, 3)
    assert starts == [0, 5, 10, 12]
    w = normalized_weights(starts, 8, 20, "overlap_linear")
    # frames 0..5 come from window 0 alone, frame 6..7 are shared with window 1 (contributing 6..12)
    np.testing.assert_allclose(w[0, :6], 1.0)
    np.testing.assert_allclose(w[0, 6:], [2 / 3, 1 / 3])
    np.testing.assert_allclose(w[1, 1:3], [1 / 3, 2 / 3])
    np.testing.assert_allclose(w[1, 3:5], 1.0)  # frames 8, 9: window 1 alone
    # overlap 1 and no clamped window: no frame is shared, every frame from one window, weight 1
    assert window_starts(13, 4, 1) == [0, 3, 6, 9]
    w1 = normalized_weights(window_starts(13, 4, 1), 4, 13, "overlap_linear")
    assert set(np.unique(w1)) == {0.0, 1.0}


def test_unknown_fusion_mode():
    with pytest.raises(ValueError, match="fusion='max'"):
        window_weights([0], 4, "max")


# ---------------------------------------------------------------------------------- window plan


def test_plan_tables():
    plan = plan_windows(11, 6, 2, windows_per_call=2)
    assert plan.starts == (0, 4, 5) and plan.frame_index.shape == (2, 2, 6)
    flat_frames = plan.frame_index.reshape(-1, 6)
    flat_poses = plan.pose_index.reshape(-1, 6)
    np.testing.assert_array_equal(flat_frames[:3], [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [5, 6, 7, 8, 9, 10]])
    # each window's first pose slot is the reference pose (frame 0), the rest its own frames
    np.testing.assert_array_equal(flat_poses[:3, 0], 0)
    np.testing.assert_array_equal(flat_poses[:3, 1:], flat_frames[:3, 1:])
    # the padding window changes nothing
    assert np.all(plan.weight.reshape(-1, 6)[3] == 0)
    # batch_frames clamped to the frame count: one window of all frames
    short = plan_windows(5, 8, 2)
    assert short.starts == (0,) and short.batch_frames == 5 and short.frame_index.shape == (1, 1, 5)


def test_windows_per_call_for_devices():
    assert windows_per_call_for(None, 5, 2, 1) == 1
    assert windows_per_call_for(3, 2, 2, 1) == 2  # never more than the windows there are
    assert windows_per_call_for(None, 5, 2, 4) == 2  # 2 windows x 2 CFG halves over 4 devices
    assert windows_per_call_for(None, 5, 1, 4) == 4
    assert windows_per_call_for(3, 5, 2, 4) == 4  # rounded up to fill the devices evenly
    assert windows_per_call_for(None, 1, 2, 4) == 2  # one real window plus one dummy


# ---------------------------------------------------------------------------------- sampler loops


def _toy_denoiser(pose_value):
    """denoised depends on the sample, each frame's pose slot and the window's means of both (the
    window context, as temporal attention mixes the frames of a window)."""

    def denoise(x, sigma, c_noise, pose_index):
        p = pose_value[pose_index][:, :, None, None, None]  # (W, B, 1, 1, 1)
        context = 0.3 * jnp.mean(x, axis=1, keepdims=True) + 0.5 * jnp.mean(p, axis=1, keepdims=True)
        return 0.6 * x / (1.0 + sigma) + context + p + 0.01 * c_noise

    return denoise


def _release_loop(x, pose_value, sigmas, c_noise, frames, batch, overlap, mode):
    """The release's window loop in NumPy float64, window by window (fusion weights for modes
    other than uniform from `window_weights`, whose sums are tested above)."""
    batch = min(batch, frames)
    starts = window_starts(frames, batch, overlap)
    weights = window_weights(starts, batch, mode)
    for i in range(len(c_noise)):
        acc = np.zeros_like(x)
        total = np.zeros(frames)
        for k, start in enumerate(starts):
            window = x[start:start + batch]
            poses = pose_value[start:start + batch].copy()
            poses[0] = pose_value[0]
            denoised = (0.6 * window / (1.0 + sigmas[i]) + 0.3 * window.mean(0, keepdims=True)
                        + 0.5 * poses.mean() + poses[:, None, None, None] + 0.01 * c_noise[i])
            stepped = window + (window - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
            acc[start:start + batch] += weights[k][:, None, None, None] * stepped
            total[start:start + batch] += weights[k]
        x = acc / total[:, None, None, None]
    return x


@pytest.fixture(scope="module")
def run_sampler():
    @jax.jit
    def run(x, pose_value, sigmas, c_noise, plan):
        return sample_windows(_toy_denoiser(pose_value), x, sigmas, c_noise, plan, plan["pose_index"])

    return run


def _inputs(frames, seed=0):
    rng = np.random.default_rng(seed)
    sigmas, c_noise = make_sigmas(SchedulerConfig(), 3)
    sigmas = sigmas.copy()
    sigmas[0] = 5.0  # keep the toy's values moderate; any decreasing schedule will do
    x = rng.standard_normal((frames, 2, 3, 4))
    pose_value = rng.standard_normal(frames)
    return x, pose_value, sigmas, c_noise


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("frames,batch,overlap", [(9, 4, 1), (7, 7, 0), (11, 6, 2), (5, 8, 2), (20, 8, 5)])
@pytest.mark.parametrize("windows_per_call", [1, 3])
def test_sample_windows_matches_plain_loop(run_sampler, mode, frames, batch, overlap, windows_per_call):
    x, pose_value, sigmas, c_noise = _inputs(frames)
    plan = plan_windows(frames, batch, overlap, fusion=mode, windows_per_call=windows_per_call)
    out = run_sampler(jnp.asarray(x, jnp.float32), jnp.asarray(pose_value, jnp.float32), sigmas, c_noise,
                      plan.arrays())
    expected = _release_loop(x, pose_value, sigmas.astype(np.float64), c_noise.astype(np.float64), frames, batch,
                             overlap, mode)
    # float32 loop vs float64 loop over 3 steps of O(1) values: rounding of ~1e-7 per operation
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_sampler_breaks_without_reference_pose_slot(run_sampler):
    """The comparison above can fail: without the reference-pose replacement the loops differ."""
    frames, batch, overlap = 11, 6, 2
    x, pose_value, sigmas, c_noise = _inputs(frames)
    plan = plan_windows(frames, batch, overlap).arrays()
    plan["pose_index"] = plan["frame_index"]  # each window conditioned on its own first pose
    out = run_sampler(jnp.asarray(x, jnp.float32), jnp.asarray(pose_value, jnp.float32), sigmas, c_noise, plan)
    expected = _release_loop(x, pose_value, sigmas.astype(np.float64), c_noise.astype(np.float64), frames, batch,
                             overlap, "uniform")
    assert np.max(np.abs(np.asarray(out) - expected)) > 1e-2


def test_one_compilation_per_shape(run_sampler):
    x, pose_value, sigmas, c_noise = _inputs(11, seed=3)
    before = run_sampler._cache_size()
    for mode in FUSION_MODES:  # weights are traced: a new fusion mode is no new program
        plan = plan_windows(11, 6, 2, fusion=mode, windows_per_call=2)
        run_sampler(jnp.asarray(x, jnp.float32), jnp.asarray(pose_value, jnp.float32), sigmas, c_noise,
                    plan.arrays())
    assert run_sampler._cache_size() - before <= 1


# ---------------------------------------------------------------------------------- denoiser


def test_v_denoiser_euler_equals_scheduler_step():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 3, 2, 2, 4)), jnp.float32)
    v = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    sigma, sigma_next = jnp.float32(3.7), jnp.float32(1.2)
    seen = {}

    def model(x_in, c_noise, inputs):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return v

    denoised = v_prediction_denoiser(model)(x, sigma, jnp.float32(0.25 * np.log(3.7)), None)
    stepped = x + (x - denoised) / sigma * (sigma_next - sigma)
    # same float32 operations in the same order as the scheduler's step
    np.testing.assert_allclose(stepped, euler_step(v, x, sigma, sigma_next), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(seen["x_in"], x / np.sqrt(3.7 ** 2 + 1), rtol=1e-6)


def test_guide_per_frame():
    u = jnp.zeros((2, 3, 1, 1, 1))
    c = jnp.ones((2, 3, 1, 1, 1))
    out = guide(u, c, jnp.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(out)[:, :, 0, 0, 0], [[1, 2, 3], [1, 2, 3]])


# ---------------------------------------------------------------------------------- parameters


def test_defaults_are_the_endpoints():
    p = validate_params()
    assert (p.height, p.width, p.num_inference_steps, p.guidance_scale, p.batch_frames, p.overlap,
            p.motion_bucket_id, p.fps, p.controlnext_cond_scale, p.decode_chunk_size) == (
        1024, 576, 25, 3.0, 24, 6, 127, 7, 1.0, 2)
    assert p == AnimateParams() and p.guidance_range == (3.0, 3.0)


@pytest.mark.parametrize("kwargs,message", [
    ({"height": 32}, "height=32: allowed range is 64..1024"),
    ({"width": 100}, "width=100: allowed: multiples of 8 in 64..1024"),
    ({"num_inference_steps": 0}, "num_inference_steps=0: allowed range is 1..100"),
    ({"num_inference_steps": 2.5}, "num_inference_steps=2.5: must be an integer in 1..100"),
    ({"guidance_scale": 0.05}, "guidance_scale=0.05: allowed range is 0.1..10"),
    ({"guidance_scale": float("nan")}, "guidance_scale=nan: must be a number in 0.1..10"),
    ({"batch_frames": 51}, "batch_frames=51: allowed range is 1..50"),
    ({"overlap": 21}, "overlap=21: allowed range is 0..20"),
    ({"decode_chunk_size": 11}, "decode_chunk_size=11: allowed range is 1..10"),
    ({"motion_bucket_id": 256}, "motion_bucket_id=256: allowed range is 0..255"),
    ({"fps": 0}, "fps=0: allowed range is 1..60"),
    ({"fps": True}, "fps=True: must be an integer in 1..60"),
    ({"controlnext_cond_scale": 11}, "controlnext_cond_scale=11: allowed range is 0.1..10"),
    ({"fusion": "max"}, "fusion='max': allowed: uniform, triangular, overlap_linear"),
    ({"output_type": "pil"}, "output_type='pil': allowed: np, latent"),
    ({"windows_per_call": 0}, "windows_per_call=0: allowed range is 1..1024"),
    ({"num_frames": 0}, "num_frames=0: allowed range is 1..1000"),
    ({"num_frames": 30, "batch_frames": 20, "overlap": 20}, "overlap=20: allowed range is 0..19"),
    ({"num_frames": 9, "batch_frames": 4, "overlap": 6}, "overlap=6: allowed range is 0..3"),
    ({"colour": 1}, "colour: unknown parameter"),
])
def test_validation_errors_are_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        validate_params(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validation_accepts_single_window_overlaps():
    # one window holds all frames: the overlap is irrelevant (the release crashes at 6 frames / 24 / 6)
    assert validate_params(num_frames=6, batch_frames=24, overlap=6).overlap == 6
    assert validate_params(num_frames=3, batch_frames=4, overlap=6, size_multiple=64).batch_frames == 4
