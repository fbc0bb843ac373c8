"""The animate pipeline on a tiny random-weight model against the torch reference of the release.

One tiny checkpoint (random torch weights in the diffusers layout, converted with our
converter) is shared by every test; sizes are 64x64 pixels (8x8 latents: the tiny UNet
needs even latent sizes, the VAE downsamples by 8) and 2 Euler steps. Each distinct
(frames, windows) shape costs one XLA compilation of ~20 s on this CPU, so the cases reuse
shapes where they can (7 frames at batch 7 and at batch 9 are the same program), and the tests
outside the `slow` marker share a single program (10 frames, windows of 6 overlapping by 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from controlnext_jax.pipeline import load_pipeline
from controlnext_jax.pose.video import prepare_reference
from controlnext_jax.testing.parity_cases import rel_err
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release, release_sample

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
STEPS = 2
# ||jax - torch|| / ||torch|| of the final latents in float32: both sides run the same float32
# maths in a different operation order (XLA fusions, conv algorithms); measured 1e-5..3e-5
# after 2 steps, so 1e-4 leaves room without hiding a wrong frame, pose or weight (those give >1e-2).
PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    configs = model_configs("tiny")
    models, converted = build_random_release(tmp_path_factory.mktemp("tiny_release"), configs, seed=0)
    return models, configs, converted


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def pipe(release, cache_dir):
    return load_pipeline(release[2], compilation_cache_dir=cache_dir)


def _inputs(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)
    latents = rng.standard_normal((1, frames, SIZE // 8, SIZE // 8, 4), dtype=np.float32)
    image_noise = rng.standard_normal((1, SIZE, SIZE, 3), dtype=np.float32)
    return image, poses, latents, image_noise


def _run_jax(pipe, frames, batch, overlap, guidance, seed=0, **kw):
    image, poses, latents, image_noise = _inputs(frames, seed)
    kw = {"reference_quirks": True, "output_type": "latent", **kw}
    return pipe(image, poses, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=guidance,
                batch_frames=batch, overlap=overlap, latents=latents, image_noise=image_noise, **kw)


def _run_torch(release, frames, batch, overlap, guidance, seed=0, **kw):
    models, configs, _ = release
    image, poses, latents, image_noise = _inputs(frames, seed)
    return release_sample(models, configs["scheduler"], image, poses, latents=latents, image_noise=image_noise,
                          num_inference_steps=STEPS, min_guidance_scale=guidance, max_guidance_scale=guidance,
                          batch_frames=batch, overlap=overlap, **kw)


# ------------------------------------------------------------------------ parity with the release


slow = pytest.mark.slow


@pytest.mark.parametrize("frames,batch,overlap,guidance", [
    (10, 6, 2, 3.0),  # two windows (the fast tests' shape: its program is compiled once for all)
    (10, 6, 2, 1.0),  # CFG on at exactly 1 (uncond + 1 * (cond - uncond))
    pytest.param(9, 4, 1, 3.0, marks=slow),  # three windows, the last clamped to start 5
    pytest.param(7, 7, 0, 3.0, marks=slow),  # one window of all frames
    pytest.param(7, 9, 2, 3.0, marks=slow),  # fewer frames than batch_frames: batch clamped (same program)
    pytest.param(10, 6, 2, 0.5, marks=slow),  # the release turns CFG off below 1 (a program without CFG)
    pytest.param(11, 6, 2, 3.0, marks=slow),  # three windows, the last clamped, frames shared by three
])
def test_quirks_mode_matches_release(pipe, release, frames, batch, overlap, guidance):
    ours = _run_jax(pipe, frames, batch, overlap, guidance)
    ref = _run_torch(release, frames, batch, overlap, guidance)
    assert ours.shape == ref.shape == (1, frames, SIZE // 8, SIZE // 8, 4) and ours.dtype == np.float32
    err = rel_err(ours, ref)
    print(f"frames={frames} batch={batch} overlap={overlap} guidance={guidance}: rel. error {err:.2e}")
    assert err < PARITY_TOL


@slow
def test_windows_per_call_stacks_windows(pipe, release):
    """3 windows in one UNet call (one program with a (1, 3, 6) window table) = one at a time."""
    one = _run_jax(pipe, 11, 6, 2, 3.0, windows_per_call=1)
    three = _run_jax(pipe, 11, 6, 2, 3.0, windows_per_call=3)
    # the same float32 maths in a batch of 6 instead of 2: only the order of reductions can differ
    # (rounding, ~1e-6..1e-5 after 2 steps); a wrong window or weight gives > 1e-2
    assert rel_err(three, one) < 3e-5
    assert rel_err(three, _run_torch(release, 11, 6, 2, 3.0)) < PARITY_TOL


def test_one_compilation_per_shape_set(pipe):
    _run_jax(pipe, 10, 6, 2, 3.0)
    compiled, traced = pipe.compile_count, pipe.trace_count
    # other values of every traced input: seed-drawn noise, guidance, conditioning, fusion, mode
    image, poses, _, _ = _inputs(10, seed=5)
    pipe(image, poses, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=2.0, batch_frames=6,
         overlap=2, seed=3, fps=12, motion_bucket_id=30.0, controlnext_cond_scale=0.5, fusion="triangular",
         output_type="latent")
    _run_jax(pipe, 10, 6, 2, 3.0, reference_quirks=False, fusion="overlap_linear")
    assert (pipe.compile_count, pipe.trace_count) == (compiled, traced)


def test_persistent_compilation_cache_is_written(pipe, cache_dir):
    _run_jax(pipe, 10, 6, 2, 3.0)
    assert any(cache_dir.iterdir())


# ------------------------------------------------------------------------ default mode vs quirks mode


def test_default_mode_equals_quirks_at_the_release_values(pipe):
    quirks = _run_jax(pipe, 10, 6, 2, 3.0)
    # fps 7 -> added id fps - 1 = 6; bucket 128; cond scale 1: the release's fixed values
    default = _run_jax(pipe, 10, 6, 2, 3.0, reference_quirks=False, fps=7, motion_bucket_id=128.0,
                       controlnext_cond_scale=1.0)
    np.testing.assert_array_equal(default, quirks)


@pytest.mark.parametrize("kwargs,torch_kwargs", [
    ({"fps": 10}, {"added_time_ids": (9.0, 128.0, 0.02)}),
    ({"motion_bucket_id": 40.0}, {"added_time_ids": (6.0, 40.0, 0.02)}),
    ({"controlnext_cond_scale": 2.5}, {"control_scale": 2.5}),
])
def test_default_mode_honours_endpoint_parameters(pipe, release, kwargs, torch_kwargs):
    base = {"fps": 7, "motion_bucket_id": 128.0, "controlnext_cond_scale": 1.0}
    default = _run_jax(pipe, 10, 6, 2, 3.0, reference_quirks=False, **{**base, **kwargs})
    quirks = _run_jax(pipe, 10, 6, 2, 3.0, reference_quirks=True, **{**base, **kwargs})
    assert rel_err(default, quirks) > 1e-3  # the parameter took effect
    np.testing.assert_array_equal(quirks, _run_jax(pipe, 10, 6, 2, 3.0))  # quirks mode ignores it
    # and it acts exactly where the release's sampler would put it
    assert rel_err(default, _run_torch(release, 10, 6, 2, 3.0, **torch_kwargs)) < PARITY_TOL


@slow
def test_guidance_below_one(pipe):
    quirks_05 = _run_jax(pipe, 10, 6, 2, 0.5)
    # the release ignores the value below 1: the conditional prediction alone
    np.testing.assert_array_equal(quirks_05, _run_jax(pipe, 10, 6, 2, 0.9))
    # default mode guides at every value: 0.5 is between uncond (0) and cond (1)
    default_05 = _run_jax(pipe, 10, 6, 2, 0.5, reference_quirks=False, motion_bucket_id=128.0)
    default_10 = _run_jax(pipe, 10, 6, 2, 1.0, reference_quirks=False, motion_bucket_id=128.0)
    assert rel_err(default_05, quirks_05) > 1e-3 and rel_err(default_05, default_10) > 1e-3
    # at 1.0, uncond + 1 * (cond - uncond) is the conditional prediction up to float32 rounding
    assert rel_err(default_10, quirks_05) < 1e-5


def test_overlap_linear_equals_uniform_with_one_shared_frame(pipe):
    """Windows start at 0 and 4: only frame 5 is shared (window 1 skips frame 4), where the
    cross-fade's 1/2, 1/2 is the mean; the triangular weights differ there."""
    uniform = _run_jax(pipe, 10, 6, 2, 3.0)
    # same values, weights 1/2 + 1/2 instead of (1 + 1) / 2: float32 rounding only
    np.testing.assert_allclose(_run_jax(pipe, 10, 6, 2, 3.0, fusion="overlap_linear"), uniform, rtol=1e-6, atol=1e-6)
    assert rel_err(_run_jax(pipe, 10, 6, 2, 3.0, fusion="triangular"), uniform) > 1e-4


@slow
def test_fusion_modes_take_effect(pipe):
    """Windows start at 0, 4, 5: frames 5..9 are shared, so every mode fuses differently
    (the weights themselves are checked in test_sampler.py)."""
    uniform = _run_jax(pipe, 11, 6, 2, 3.0)
    triangular = _run_jax(pipe, 11, 6, 2, 3.0, fusion="triangular")
    linear = _run_jax(pipe, 11, 6, 2, 3.0, fusion="overlap_linear")
    assert rel_err(triangular, uniform) > 1e-4 and rel_err(linear, uniform) > 1e-4
    assert rel_err(triangular, linear) > 1e-4


# ------------------------------------------------------------------------ inputs and outputs


def test_reference_of_another_size_is_cover_resized(pipe):
    rng = np.random.default_rng(4)
    big = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    _, poses, latents, image_noise = _inputs(10)
    kw = dict(height=SIZE, width=SIZE, num_inference_steps=STEPS, batch_frames=6, overlap=2, latents=latents,
              image_noise=image_noise, output_type="latent", reference_quirks=True)
    np.testing.assert_array_equal(pipe(big, poses, **kw), pipe(prepare_reference(big, SIZE, SIZE), poses, **kw))


def test_bad_inputs_are_named(pipe):
    image, poses, latents, _ = _inputs(7)
    with pytest.raises(ValueError, match=r"poses: uint8 array \(frames, 64, 64, 3\)"):
        pipe(image, poses[:, :32], height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match=r"latents: float array of shape \(1, 7, 8, 8, 4\)"):
        pipe(image, poses, height=SIZE, width=SIZE, latents=latents[:, :3])
    with pytest.raises(ValueError, match="overlap=7: allowed range is 0..3"):
        pipe(image, poses, height=SIZE, width=SIZE, batch_frames=4, overlap=7)


@slow
def test_decoded_frames_match_release(pipe, release):
    """uint8 output: 7 frames decoded 2 at a time (chunks 2, 2, 2, 1), against the release's decode."""
    ours = _run_jax(pipe, 7, 7, 0, 3.0, output_type="np", decode_chunk_size=2)
    ref = _run_torch(release, 7, 7, 0, 3.0, output_type="np", decode_chunk_size=2)
    assert ours.shape == (7, SIZE, SIZE, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    # float32 differences of ~1e-5 only flip a value lying on a rounding boundary, by one level
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert len(np.unique(ours)) > 50  # not a saturated or constant image


def test_decode_groups_equal_chunk_by_chunk(pipe):
    """decode_latents with chunks grouped for 2 devices (here on one: no constraint) decodes the same
    chunks as the one-device path: 7 frames, chunks of 2 -> 3 full chunks in 2 groups (one zero
    padding chunk, dropped) + 1 frame."""
    import jax
    from flax import nnx

    from controlnext_jax.pipeline.program import decode_latents

    vae = nnx.merge(pipe.graphdefs["vae"], pipe._params["vae"])
    z = jax.random.normal(jax.random.key(3), (7, 8, 8, 4))
    one = np.asarray(decode_latents(vae, z, 2, 0.18215)).astype(int)
    grouped = np.asarray(decode_latents(vae, z, 2, 0.18215, devices=2)).astype(int)
    assert grouped.shape == one.shape == (7, SIZE, SIZE, 3) and len(np.unique(one)) > 50
    # the decoder sees 2 chunks per call instead of 1: only float reduction order may differ
    assert np.abs(grouped - one).max() <= 1 and (grouped != one).mean() < 0.01


# ------------------------------------------------------------------------ several devices


_MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from controlnext_jax.pipeline import load_pipeline, validate_params
    ckpt, cache = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)
    kw = dict(height=64, width=64, num_inference_steps=2, batch_frames=6, overlap=2, seed=1, output_type="latent",
              reference_quirks=True)
    many = load_pipeline(ckpt, compilation_cache_dir=cache)
    out_many = many(image, poses, **kw)
    leaf = jax.tree.leaves(many._params)[0]
    inputs, static = many.prepare(image, poses, validate_params(num_frames=11, **kw))
    # the compiled per-device program: the UNet batch of 2 windows x 2 CFG halves is split 4 ways
    hlo = many._program.lower(many._params, inputs, **static).compile().as_text()
    one = load_pipeline(ckpt, devices=jax.devices()[:1], compilation_cache_dir=cache)
    out_one = one(image, poses, **kw)
    err = float(np.linalg.norm(out_many - out_one) / np.linalg.norm(out_one))
    # decoded frames, chunks of 2 (5 full chunks spread over the 4 devices + 1 frame)
    kw.update(output_type="np", decode_chunk_size=2)
    frames_diff = np.abs(many(image, poses, **kw).astype(int) - one(image, poses, **kw).astype(int))

    # the decode: 11 frames in chunks of 2 = 5 full chunks (2 groups of 4 devices, 3 padding
    # chunks) + 1 frame, against every device decoding every chunk of the replicated latents
    from flax import nnx
    from controlnext_jax.pipeline.program import decode_latents
    from controlnext_jax.pipeline.sharding import batch_constraint, replicate
    z = replicate(jax.random.normal(jax.random.key(2), (11, 8, 8, 4)), many.mesh)
    def decode(devices, constrain):
        fn = jax.jit(lambda p, z: decode_latents(nnx.merge(many.graphdefs["vae"], p), z, 2, 0.18215,
                                                 devices=devices, constrain=constrain))
        cost = fn.lower(many._params["vae"], z).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["flops"], np.asarray(fn(many._params["vae"], z)).astype(int)
    spread_flops, spread = decode(4, batch_constraint(many.mesh))
    # the same groups of 4 chunks without the constraint: every device decodes all 4 (XLA's cost
    # analysis counts the loop body once, so compare programs with the same loop)
    every_flops, _ = decode(4, lambda x: x)
    _, every = decode(1, lambda x: x)  # the one-device path: one chunk per decoder call
    print(json.dumps({"devices": len(jax.devices()), "param_devices": len(leaf.sharding.device_set),
                      "sharded_batch": "f32[1,6,8,8,8]" in hlo and "f32[4,6,8,8,8]" not in hlo, "rel_err": err,
                      "frames_max_diff": int(frames_diff.max()), "frames_differ": float((frames_diff > 0).mean()),
                      "decode_flops_ratio": spread_flops / every_flops,
                      "decode_max_diff": int(np.abs(spread - every).max()),
                      "decode_values": len(np.unique(spread)), "decode_shape": list(spread.shape)}))
""")


@slow
def test_four_device_mesh_equals_one_device(release, cache_dir):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(release[2]), str(cache_dir)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert report["devices"] == 4 and report["param_devices"] == 4 and report["sharded_batch"]
    # the same float32 maths split over 4 devices (2 windows x 2 CFG halves per call) against one
    # window per call on one device: only reduction order differs (measured 6e-6 after 2 steps)
    assert report["rel_err"] < 3e-5
    # the whole program's uint8 frames: the same maths, a rounding-boundary level at most
    assert report["frames_max_diff"] <= 1 and report["frames_differ"] < 0.01
    # per group each device decodes 1 chunk (2 frames) instead of 4 (8 frames); with the last
    # frame, decoded everywhere, about 3/9 of the work
    assert report["decode_flops_ratio"] < 0.5
    # the same decoder maths on the same chunks: uint8 frames equal up to a rounding-boundary level
    assert report["decode_shape"] == [11, 64, 64, 3] and report["decode_max_diff"] <= 1
    assert report["decode_values"] > 50


_DECODE_MESH_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    import jax, numpy as np
    from controlnext_jax.pipeline import load_pipeline
    from controlnext_jax.testing.torch_checkpoints import model_configs
    from controlnext_jax.testing.torch_sampler import build_random_release
    _, ckpt = build_random_release(Path(tempfile.mkdtemp(dir=sys.argv[1])), model_configs("small"), seed=0)
    cache = sys.argv[2]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (14, 128, 96, 3), dtype=np.uint8)
    kw = dict(height=128, width=96, num_inference_steps=2, batch_frames=8, overlap=2, seed=1, output_type="np",
              reference_quirks=True)
    many = load_pipeline(ckpt, compilation_cache_dir=cache)(image, poses, **kw).astype(int)
    one = load_pipeline(ckpt, devices=jax.devices()[:1], compilation_cache_dir=cache)(image, poses, **kw).astype(int)
    diff = np.abs(many - one)
    print(json.dumps({"devices": len(jax.devices()), "max_diff": int(diff.max()),
                      "differ": float((diff > 0).mean()), "values": len(np.unique(one))}))
""")


@slow
def test_two_device_frames_equal_one_device(tmp_path, cache_dir):
    """The small model's 14 frames of 128x96, decoded uint8, on 2 CPU devices against one. With the
    decode inside the sampling program XLA:CPU gave wrong frames here (58-82 % of values, up to 230
    levels, varying from run to run); the pipeline runs the decode as a program of its own on
    several devices (`StagedProgram`, docs/sampling.md, Several devices). The tiny model of the
    4-device test above never showed it."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _DECODE_MESH_SCRIPT, str(tmp_path), str(cache_dir)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert report["devices"] == 2 and report["values"] > 50
    # the same float32 maths on 2 devices: a level at most, on values at a rounding boundary
    assert report["max_diff"] <= 1 and report["differ"] < 0.01


@slow
def test_bfloat16_pipeline_stays_close(release, cache_dir):
    bf16 = load_pipeline(release[2], dtype="bfloat16", compilation_cache_dir=cache_dir)
    ours = _run_jax(bf16, 10, 6, 2, 3.0)
    ref = _run_torch(release, 10, 6, 2, 3.0)
    err = rel_err(ours, ref)
    print(f"bfloat16 networks, float32 sampling: rel. error {err:.2e}")
    # bfloat16 keeps 8 mantissa bits (~4e-3 per rounding); through the random-weight UNet and 2
    # steps that adds up to a few 1e-2 (measured 3.5e-2); a wrong program would give O(1)
    assert err < 0.1
