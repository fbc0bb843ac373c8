"""ControlNeXt's control injection against torch (adaptive_avg_pool2d, unbiased std, renormalisation)
and against golden outputs of the release's own UNet (tests/data/release_unet_control.npz)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel as TorchUNet
from flax import nnx

from controlnext_jax.models.control_injection import adaptive_avg_pool2d, frame_stats, inject_control
from controlnext_jax.models.unet_spatio_temporal import UNetConfig
from controlnext_jax.testing.torch_controlnext import hook_control_into_unet, torch_inject_control
from tests.golden import convert_into, load_golden, nhwc
from tests.parity import TOL, nchw_to_nhwc, rel_err


@pytest.mark.parametrize("in_hw,out_hw", [((127, 71), (64, 36)), ((15, 11), (8, 6)), ((8, 6), (8, 6)),
                                          ((10, 9), (4, 4)), ((13, 7), (5, 3)), ((5, 3), (8, 7)),
                                          ((128, 72), (64, 36))])
def test_adaptive_avg_pool2d_matches_torch(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw)
    ref = F.adaptive_avg_pool2d(x, out_hw)
    out = jax.jit(adaptive_avg_pool2d, static_argnums=1)(jnp.asarray(nchw_to_nhwc(x)), out_hw)
    np.testing.assert_allclose(np.asarray(out), nchw_to_nhwc(ref), rtol=1e-5, atol=1e-6)


def test_unbiased_std_matches_torch():
    x = torch.randn(3, 4, 5, 6) * 2 + 1
    mean, std = frame_stats(jnp.asarray(nchw_to_nhwc(x)))
    np.testing.assert_allclose(np.asarray(mean).ravel(), x.mean(dim=(1, 2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(std).ravel(), x.std(dim=(1, 2, 3)).numpy(), rtol=1e-5)
    # the biased std differs by sqrt(N/(N-1)) = 1.0042 here: far outside the tolerance above
    assert not np.allclose(np.asarray(std).ravel(), x.std(dim=(1, 2, 3), unbiased=False).numpy(), rtol=1e-3)


def test_inject_control_matches_torch_with_per_sample_scale():
    x, c = torch.randn(4, 32, 8, 6) * 3 + 0.5, torch.randn(4, 32, 15, 11) * 0.1 - 2
    scale = torch.tensor([0.0, 0.0, 1.0, 0.7])[:, None, None, None]
    ref = torch_inject_control(x, c, scale)
    out = inject_control(jnp.asarray(nchw_to_nhwc(x)), jnp.asarray(nchw_to_nhwc(c)), jnp.asarray(scale.ravel()))
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL
    # scale 0 leaves the activation untouched; scale 1 changes it
    np.testing.assert_array_equal(np.asarray(out)[:2], nchw_to_nhwc(x)[:2])
    assert rel_err(np.asarray(out)[2:], nchw_to_nhwc(x)[2:]) > 1e-2


def test_inject_control_rejects_mismatched_control():
    with pytest.raises(ValueError):
        inject_control(jnp.ones((2, 4, 4, 32)), jnp.ones((2, 7, 7, 16)))



# -- golden outputs of the release's UNetSpatioTemporalConditionControlNeXtModel ---------------------------
# A tiny two-block UNet with random weights run by the release's own forward, with a control map and
# the per-frame scale its pipeline builds (first half of the CFG batch 0, second half 1).


@pytest.fixture(scope="module")
def golden():
    return load_golden("release_unet_control.npz")


def _per_frame_scale(golden) -> np.ndarray:
    return golden.arrays["input/scale"]


def test_inject_control_matches_release_golden(golden):
    # the tensors that entered and left the release's injection (hooks around its down block 0 / 1)
    x, out = golden.arrays["injection/x"], golden.arrays["injection/out"]
    control, scale = golden.arrays["input/control"], _per_frame_scale(golden)
    assert set(scale.tolist()) == {0.0, 1.0} and control.shape[-2:] != x.shape[-2:]
    ours = jax.jit(inject_control)(jnp.asarray(nhwc(x)), jnp.asarray(nhwc(control)), jnp.asarray(scale))
    # compared on the added term, out - x, so the activation x does not dilute a slip in the control path
    err = rel_err(np.asarray(ours) - nhwc(x), nhwc(out - x))
    print(f"injection: relative error of the added control {err:.2e}")
    # TOL = 1e-4: float32 means, stds and averages summed in another order than torch's (observed ~1e-7);
    # the biased instead of the unbiased std alone moves it by ~1e-3 here
    assert err <= TOL, err
    # the scale-0 frames are left exactly as they were
    np.testing.assert_array_equal(np.asarray(ours)[scale == 0], nhwc(x)[scale == 0])


def test_torch_reference_injection_matches_release_golden(golden):
    # our torch reference of the injection (used by the UNet parity tests) computes the release's
    x, out = golden.arrays["injection/x"], golden.arrays["injection/out"]
    scale = torch.from_numpy(_per_frame_scale(golden))[:, None, None, None]
    ref = torch_inject_control(torch.from_numpy(x), torch.from_numpy(golden.arrays["input/control"]), scale)
    # TOL: float32, torch's kernels may sum in another order on another CPU or version than at generation
    assert rel_err(ref.numpy() - x, out - x) <= TOL


def _unet_inputs(golden, control: bool):
    a = golden.arrays
    b, f = a["input/sample"].shape[:2]
    scale = _per_frame_scale(golden).reshape(b, f)
    assert (scale == scale[:, :1]).all()  # one scale per video, as our UNet takes it
    args = [jnp.asarray(nhwc(a["input/sample"])), jnp.asarray(a["input/timestep"]),
            jnp.asarray(a["input/encoder_hidden_states"]), jnp.asarray(a["input/added_time_ids"])]
    if control:
        args += [jnp.asarray(nhwc(a["input/control"])), jnp.asarray(scale[:, 0])]
    return args


_unet = nnx.jit(lambda m, *args: m(*args))
EFFECT_TOL = 2e-4


def test_unet_with_control_matches_release_golden(golden, tmp_path):
    cfg = UNetConfig.from_dict(golden.meta["config"])
    ours = convert_into("unet", cfg, golden.weights, tmp_path)
    out = np.asarray(_unet(ours, *_unet_inputs(golden, control=True)))
    plain = np.asarray(_unet(ours, *_unet_inputs(golden, control=False)))
    ref, ref_plain = nhwc(golden.arrays["output/sample"]), nhwc(golden.arrays["output/sample_without_control"])
    err, err_plain = rel_err(out, ref), rel_err(plain, ref_plain)
    # what the control changed, so the uncontrolled path does not dilute a slip in the injection
    err_effect = rel_err(out - plain, ref - ref_plain)
    print(f"unet: relative error {err:.2e}, without control {err_plain:.2e}, of the control's effect {err_effect:.2e}")
    # TOL = 1e-4: float32 convolutions, attention and norms summed in another order than torch's
    # (observed ~8e-7 on the outputs)
    assert max(err, err_plain) <= TOL, (err, err_plain)
    # EFFECT_TOL = 2e-4: the effect is the difference of two outputs, each off by ~8e-7 of its norm, and
    # ~20x smaller than them, so their float32 rounding shows ~20x larger (observed 1.9e-5); a biased
    # std in the injection gives 8.5e-4, a control leaking into block 0's skips far more
    assert err_effect <= EFFECT_TOL, err_effect
    # the first video had scale 0: the uncontrolled output (up to the rounding of another compiled program)
    assert rel_err(out[0], plain[0]) < 1e-5


def test_torch_reference_unet_matches_release_golden(golden):
    # diffusers' UNet with our injection hook (the reference of the UNet parity tests) is the release's UNet
    a = golden.arrays
    tm = TorchUNet(**golden.meta["config"]).eval()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in golden.weights.items()}, strict=True)
    handle = hook_control_into_unet(tm, torch.from_numpy(a["input/control"]),
                                    torch.from_numpy(_per_frame_scale(golden))[:, None, None, None])
    try:
        with torch.no_grad():
            ref = tm(torch.from_numpy(a["input/sample"]), torch.from_numpy(a["input/timestep"]),
                     torch.from_numpy(a["input/encoder_hidden_states"]),
                     torch.from_numpy(a["input/added_time_ids"])).sample
    finally:
        handle.remove()
    # TOL: float32, torch's kernels may sum in another order on another CPU or version than at generation
    assert rel_err(ref.numpy(), a["output/sample"]) <= TOL
