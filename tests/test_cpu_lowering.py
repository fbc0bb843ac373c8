"""The CPU forms of convolution and attention compute what lax.conv / dot_product_attention / torch do,
and the package's XLA flag defaults never override a flag the user set.

Tolerances: float32 results that differ only in summation order (im2col sums the taps in
one matmul, lax.conv and torch in their own order) agree to about 1e-6 relative on these
sizes; 1e-5 leaves room for that and still catches a wrong tap, stride or padding (those
give errors of order 1).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from controlnext_jax.models import layers
from controlnext_jax.models.attention import Attention, attend
from controlnext_jax.models.layers import Conv, conv_forward, conv_uses_im2col, set_conv_lowering
from controlnext_jax.xla_flags import DEFAULT_CPU_FLAGS, apply_default_xla_flags, flag_names

TOL = 1e-5


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def torch_conv(x: np.ndarray, kernel: np.ndarray, stride, padding) -> np.ndarray:
    """torch conv2d/conv3d on channels-last x and (*taps, in, out) kernel."""
    nd = kernel.ndim - 2
    tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    tk = torch.from_numpy(np.ascontiguousarray(np.moveaxis(kernel, (-1, -2), (0, 1))))
    fn = torch.nn.functional.conv2d if nd == 2 else torch.nn.functional.conv3d
    return np.moveaxis(fn(tx, tk, stride=stride, padding=padding).numpy(), 1, -1)


@pytest.mark.parametrize("spatial,taps,stride,pad", [
    ((7, 9), (3, 3), 1, 1),       # odd sizes, "same" padding
    ((7, 9), (3, 3), 2, 1),       # stride 2 over an odd size (the UNet's downsamplers)
    ((8, 5), (3, 3), 2, 0),       # no padding
    ((6, 6), (5, 5), 1, 2),       # wider kernel
    ((2, 2), (3, 3), 1, 1),       # map smaller than the kernel (the UNet's 2x2 level)
    ((5, 7), (1, 1), 1, 0),       # 1x1: a plain matmul
    ((5, 6, 3), (3, 1, 1), 1, 1),  # Conv3d over (frames, h, w) as the VAE's temporal decoder
])
def test_im2col_equals_lax_conv_and_torch(spatial, taps, stride, pad):
    rng = np.random.default_rng(sum(spatial) + stride)
    x = rng.standard_normal((2, *spatial, 6)).astype(np.float32)
    kernel = rng.standard_normal((*taps, 6, 5)).astype(np.float32)
    nd = len(taps)
    strides, padding = (stride,) * nd, [(pad, pad)] * nd
    if nd == 3:
        padding = [(p, p) for p in (1, 0, 0)]
    im2col = conv_forward(jnp.asarray(x), jnp.asarray(kernel), strides, padding, "im2col")
    xla = conv_forward(jnp.asarray(x), jnp.asarray(kernel), strides, padding, "xla")
    ref = torch_conv(x, kernel, stride, tuple(p for p, _ in padding))
    assert im2col.shape == xla.shape == ref.shape
    assert rel(im2col, xla) < TOL
    assert rel(im2col, ref) < TOL


def test_auto_lowering_switches_at_the_threshold():
    limit = layers.IM2COL_MAX_POSITIONS
    side = int(limit ** 0.5)
    pad = [(1, 1), (1, 1)]
    below, above = (1, side, side, 8), (1, side + 1, side, 8)
    assert conv_uses_im2col(below, (3, 3, 8, 8), (1, 1), pad, platform="cpu")
    assert not conv_uses_im2col(above, (3, 3, 8, 8), (1, 1), pad, platform="cpu")
    assert conv_uses_im2col(above, (1, 1, 8, 8), (1, 1), [(0, 0)] * 2, platform="cpu")  # 1x1: always a matmul
    assert not conv_uses_im2col(below, (3, 3, 8, 8), (1, 1), pad, platform="gpu")  # vendors' kernels elsewhere
    assert conv_uses_im2col(above, (3, 3, 8, 8), (1, 1), pad, "im2col", platform="gpu")
    assert not conv_uses_im2col(below, (3, 3, 8, 8), (1, 1), pad, "xla", platform="cpu")
    with pytest.raises(ValueError, match="conv lowering"):
        conv_uses_im2col(below, (3, 3, 8, 8), (1, 1), pad, "winograd")


@pytest.mark.parametrize("offset", [0, 1])  # a map at the threshold (im2col) and just past it (lax.conv)
def test_conv_module_matches_torch_on_both_sides_of_the_threshold(offset):
    side = int(layers.IM2COL_MAX_POSITIONS ** 0.5)
    rng = np.random.default_rng(offset)
    conv = Conv(4, 6, 3, padding=1, rngs=nnx.Rngs(offset))
    conv.kernel.set_value(jnp.asarray(rng.standard_normal(conv.kernel.shape).astype(np.float32)))
    conv.bias.set_value(jnp.asarray(rng.standard_normal(conv.bias.shape).astype(np.float32)))
    x = rng.standard_normal((2, 3, side + offset, side, 4)).astype(np.float32)  # (b, f, h, w, c)
    out = np.asarray(conv(jnp.asarray(x)))
    ref = torch_conv(x.reshape(6, side + offset, side, 4), np.asarray(conv.kernel[...]), 1, 1)
    ref = ref.reshape(out.shape) + np.asarray(conv.bias[...])
    assert rel(out, ref) < TOL
    set_conv_lowering(conv, "xla")
    assert rel(conv(jnp.asarray(x)), out) < TOL


@pytest.mark.parametrize("n,tq,tk,heads", [(2, 37, 37, 3), (5, 4, 4, 2), (2, 16, 1, 4)])
def test_einsum_attention_equals_reference_and_torch(n, tq, tk, heads):
    rng = np.random.default_rng(tq + tk)
    q, k, v = (rng.standard_normal((n, t, heads, 16)).astype(np.float32) for t in (tq, tk, tk))
    ours = attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), "einsum")
    xla = jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="xla")
    tq_, tk_, tv_ = (torch.from_numpy(a).transpose(1, 2) for a in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(tq_, tk_, tv_).transpose(1, 2).numpy()
    assert rel(ours, xla) < TOL
    assert rel(ours, ref) < TOL


def test_attention_module_default_on_cpu_is_einsum_and_equals_xla(monkeypatch):
    attn = Attention(32, heads=4, dim_head=8, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 7, 32)).astype(np.float32))
    with monkeypatch.context() as patch:  # the CPU default must not reach dot_product_attention
        patch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: pytest.fail("dot_product_attention called"))
        default = attn(x)
    attn.implementation = "xla"
    assert rel(default, attn(x)) < TOL
    with pytest.raises(ValueError, match="attention implementation"):
        attend(x, x, x, "flash")


def test_flag_defaults_added_only_where_the_user_set_none():
    env: dict[str, str] = {}
    apply_default_xla_flags(env)
    assert flag_names(env["XLA_FLAGS"]) == set(DEFAULT_CPU_FLAGS)
    user = "--xla_cpu_experimental_ynn_fusion_type=dot --xla_force_host_platform_device_count=2"
    env = {"XLA_FLAGS": user}
    apply_default_xla_flags(env)
    assert env["XLA_FLAGS"] == user  # the user's value kept, nothing appended
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    apply_default_xla_flags(env)
    assert env["XLA_FLAGS"].startswith("--xla_force_host_platform_device_count=2 ")
    assert flag_names(env["XLA_FLAGS"]) == {"xla_force_host_platform_device_count", *DEFAULT_CPU_FLAGS}
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x", "CONTROLNEXT_JAX_XLA_DEFAULTS": "0"}
    apply_default_xla_flags(env)
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"


def test_import_sets_flags_xla_accepts_and_keeps_the_users():
    """In a fresh process: importing the package adds its defaults, and XLA starts with them (it
    aborts on a flag it does not know); a user's own value survives the import untouched."""
    code = ("import os, controlnext_jax, jax.numpy as jnp; print(float(jnp.ones(3).sum())); "
            "print(os.environ['XLA_FLAGS'])")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CONTROLNEXT_JAX_XLA_DEFAULTS")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    total, flags = out.stdout.strip().splitlines()
    assert total == "3.0" and flag_names(flags) == set(DEFAULT_CPU_FLAGS)
    user = "--xla_cpu_experimental_ynn_fusion_type=dot"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "XLA_FLAGS": user}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[1] == user
