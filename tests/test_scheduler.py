"""The Euler sampler functions against diffusers' EulerDiscreteScheduler with SVD's config."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import yaml
from diffusers import EulerDiscreteScheduler

from controlnext_jax.cli import CONFIG_DIR
from controlnext_jax.sampling.scheduler import (
    SchedulerConfig,
    denoised_from_v,
    euler_step,
    init_noise_sigma,
    make_sigmas,
    scale_model_input,
)
from tests.parity import TOL, rel_err

SVD_XT = CONFIG_DIR / "model" / "svd_xt.yaml"


def _svd_config() -> dict:
    return yaml.safe_load(SVD_XT.read_text())["scheduler"]


def _diffusers(num_steps: int, **overrides) -> EulerDiscreteScheduler:
    sched = EulerDiscreteScheduler.from_config({**_svd_config(), **overrides})
    sched.set_timesteps(num_steps)
    return sched


@pytest.mark.parametrize("num_steps", [1, 2, 7, 25, 100])
def test_sigmas_and_timesteps_match_diffusers_within_one_ulp(num_steps):
    ref = _diffusers(num_steps)
    sigmas, timesteps = make_sigmas(SchedulerConfig.from_dict(_svd_config()), num_steps)
    assert sigmas.dtype == timesteps.dtype == np.float32
    assert sigmas.shape == (num_steps + 1,) and timesteps.shape == (num_steps,)
    # 1 ulp is what float32 can promise, not bit equality: diffusers takes 0.25 * sigma.log() in torch
    # float32, whose log is within 1 ulp of exact but not correctly rounded (and differs between CPUs and
    # vector code paths), while we round the float64 log once; the Karras ramp is float64 numpy pow on both
    # sides, whose last float64 bit also depends on the SIMD code path, so its float32 rounding can flip
    np.testing.assert_array_max_ulp(sigmas, ref.sigmas.numpy(), maxulp=1)
    np.testing.assert_array_max_ulp(timesteps, ref.timesteps.numpy(), maxulp=1)
    assert sigmas[-1] == 0.0 and abs(sigmas[0] - 700.0) < 1e-3


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_init_noise_sigma(spacing):
    ref = _diffusers(25, timestep_spacing=spacing)
    sigmas, _ = make_sigmas(SchedulerConfig.from_dict({**_svd_config(), "timestep_spacing": spacing}), 25)
    out = init_noise_sigma(jnp.asarray(sigmas), spacing)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(float(out), float(ref.init_noise_sigma), rtol=1e-7)
    if spacing == "leading":
        assert abs(float(out) - np.sqrt(700.0**2 + 1)) < 1e-3


def test_scale_model_input_per_step():
    ref = _diffusers(7)
    sigmas, _ = make_sigmas(SchedulerConfig(), 7)
    x = torch.randn(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(0)) * 50
    for i, t in enumerate(ref.timesteps):
        ref._step_index = i
        want = ref.scale_model_input(x, t).numpy()
        got = scale_model_input(jnp.asarray(x.numpy()), sigmas[i])
        assert rel_err(got, want) <= 1e-6


def test_multi_step_trajectory_under_jit():
    # a fixed, non-trivial fake v-prediction: a function of the scaled input and the timestep
    num_steps = 25
    ref = _diffusers(num_steps)
    sigmas, timesteps = make_sigmas(SchedulerConfig.from_dict(_svd_config()), num_steps)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 4, generator=g) * 0.5
    bias = torch.randn(1, 1, 4, 3, 2, generator=g)

    def fake_model(x_in, t):  # x_in (b, f, c, h, w); mixes channels, depends on t
        return torch.tanh(torch.einsum("dc,bfchw->bfdhw", w, x_in) + bias * torch.cos(t))

    x0 = torch.randn(2, 3, 4, 3, 2, generator=torch.Generator().manual_seed(2))

    # diffusers: the pipeline's loop, with the step index reset before each call as for every window
    x_ref = x0 * ref.init_noise_sigma
    refs = []
    for i, t in enumerate(ref.timesteps):
        ref._step_index = None
        out = fake_model(ref.scale_model_input(x_ref, t), t)
        x_ref = ref.step(out, t, x_ref).prev_sample
        refs.append(x_ref.numpy())

    step = jax.jit(lambda out, x, s, s_next: euler_step(out, x, s, s_next))
    x = jnp.asarray(x0.numpy()) * init_noise_sigma(jnp.asarray(sigmas))
    for i in range(num_steps):
        x_in = torch.from_numpy(np.array(scale_model_input(x, sigmas[i])))
        out = fake_model(x_in, torch.tensor(timesteps[i])).numpy()
        x = step(jnp.asarray(out), x, sigmas[i], sigmas[i + 1])
        assert x.dtype == jnp.float32
        assert rel_err(x, refs[i]) <= TOL, (i, rel_err(x, refs[i]))
    assert np.abs(np.asarray(x)).max() < 20  # the trajectory went from ~700 to data scale


def test_step_with_bfloat16_model_output_runs_in_float32():
    sigmas, _ = make_sigmas(SchedulerConfig(), 4)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8)).astype(np.float32)) * 10
    v = jnp.asarray(rng.normal(size=(2, 8)).astype(np.float32))
    out = euler_step(v.astype(jnp.bfloat16), x, sigmas[1], sigmas[2])
    assert out.dtype == jnp.float32
    want = euler_step(v.astype(jnp.bfloat16).astype(jnp.float32), x, sigmas[1], sigmas[2])
    np.testing.assert_array_equal(out, want)
    # the last step lands on the model's clean estimate
    np.testing.assert_allclose(euler_step(v, x, sigmas[-2], 0.0), denoised_from_v(v, x, sigmas[-2]), rtol=1e-6)


@pytest.mark.parametrize("key,value,allowed", [
    ("prediction_type", "epsilon", "v_prediction"),
    ("timestep_type", "discrete", "continuous"),
    ("use_karras_sigmas", False, "True"),
    ("timestep_spacing", "uniform", "leading"),
    ("final_sigmas_type", "sigma_min", "zero"),
    ("sigma_min", None, "positive number"),
])
def test_bad_config_is_rejected_naming_the_key(key, value, allowed):
    with pytest.raises(ValueError, match=key) as info:
        SchedulerConfig.from_dict({**_svd_config(), key: value})
    assert allowed in str(info.value)


def test_config_round_trip_and_diffusers_defaults():
    cfg = SchedulerConfig.from_dict(_svd_config())
    assert cfg == SchedulerConfig()
    assert SchedulerConfig.from_dict(cfg.to_dict()) == cfg
    # a key left out means diffusers' default (here: epsilon), which we reject
    d = dict(_svd_config())
    del d["prediction_type"]
    with pytest.raises(ValueError, match="prediction_type"):
        SchedulerConfig.from_dict(d)
    with pytest.raises(ValueError, match="num_steps"):
        make_sigmas(cfg, 0)
