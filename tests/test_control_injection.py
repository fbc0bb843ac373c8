"""ControlNeXt's control injection against torch (adaptive_avg_pool2d, unbiased std, renormalisation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from controlnext_jax.models.control_injection import adaptive_avg_pool2d, frame_stats, inject_control
from controlnext_jax.testing.torch_controlnext import torch_inject_control
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

