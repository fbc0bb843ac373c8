"""Primitive layers shared by every network: norms, convolutions, linear layers.

Parameter names follow Flax (`kernel`, `scale`, `bias`) and module attribute names
follow the PyTorch modules they port, so a PyTorch key `a.b.0.conv.weight` is the NNX
path `a/b/0/conv/kernel`; `controlnext_jax.checkpoint.torch_layout` holds the transposes.

Sharding: every parameter carries its logical axes (`controlnext_jax.sharding.logical_axes`)
as variable metadata; defaults here, call sites name the role where it differs (attention
q/k/v write HEADS, a feed-forward's down projection reads MLP...). The annotation changes no
value; `controlnext_jax.sharding.rules` turns it into a placement (docs/scaling.md).

Dtype policy: `dtype` is the compute dtype of a layer's matmuls/convolutions (bf16 on
accelerators), `param_dtype` the storage dtype. Normalisation statistics are always
computed in float32 and the result is cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.sharding.logical_axes import CONV_IN, CONV_OUT, EMBED, MLP, NORM, axes_metadata

Dtype = jnp.dtype | type

# diffusers' `norm_num_groups`: every GroupNorm of the SVD UNet and VAE has 32 groups
NORM_GROUPS = 32


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm over channels-last input of any rank.

    Statistics run over every axis but the first (batch) and the group axis, so a
    `(b, f, h, w, c)` input is normalised over frames too, as torch does for a
    `(b, c, f, h, w)` tensor.
    """

    def __init__(self, num_groups: int, num_channels: int, *, epsilon: float,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.scale = nnx.Param(jnp.ones((num_channels,), param_dtype), **axes_metadata(NORM))
        self.bias = nnx.Param(jnp.zeros((num_channels,), param_dtype), **axes_metadata(NORM))

    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        # (n, ..., c) -> (n, ..., groups, c // groups), statistics in float32
        xg = x.astype(jnp.float32).reshape(*x.shape[:-1], self.num_groups, c // self.num_groups)
        axes = tuple(range(1, xg.ndim - 2)) + (xg.ndim - 1,)
        mean = jnp.mean(xg, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
        y = ((xg - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


class LayerNorm(nnx.Module):
    """torch.nn.LayerNorm over the last axis, float32 statistics."""

    def __init__(self, num_features: int, *, epsilon: float = 1e-5, elementwise_affine: bool = True,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.epsilon = epsilon
        self.scale = (nnx.Param(jnp.ones((num_features,), param_dtype), **axes_metadata(NORM))
                      if elementwise_affine else None)
        self.bias = (nnx.Param(jnp.zeros((num_features,), param_dtype), **axes_metadata(NORM))
                     if elementwise_affine else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


def Linear(in_features: int, out_features: int, *, use_bias: bool = True, dtype: Dtype | None = None,
           param_dtype: Dtype = jnp.float32, axes: tuple[str, str] = (EMBED, MLP), rngs: nnx.Rngs) -> nnx.Linear:
    """torch.nn.Linear: kernel (in, out) = torch weight transposed.

    `axes`: the logical axes of (in, out); the bias follows `out`.
    """
    return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_metadata=axes_metadata(*axes), bias_metadata=axes_metadata(axes[1]), rngs=rngs)


def Conv(in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
         stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, use_bias: bool = True,
         dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, axes: tuple[str, str] = (CONV_IN, CONV_OUT),
         rngs: nnx.Rngs) -> nnx.Conv:
    """torch.nn.Conv2d/Conv3d with torch's symmetric integer padding, channels-last.

    `kernel_size` given as an int means a 2-D square kernel; a sequence sets the rank
    (3 entries for torch Conv3d over (frames, height, width)). `axes`: the logical axes of
    the kernel's (in, out) channels; its spatial taps are never sharded, the bias follows `out`.
    """
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    pad = (padding,) * len(ks) if isinstance(padding, int) else tuple(padding)
    st = (stride,) * len(ks) if isinstance(stride, int) else tuple(stride)
    return nnx.Conv(in_features, out_features, ks, strides=st, padding=[(p, p) for p in pad],
                    use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_metadata=axes_metadata(*(None,) * len(ks), *axes), bias_metadata=axes_metadata(axes[1]),
                    rngs=rngs)


class Activation(nnx.Module):
    """A parameter-free activation kept as a module so that positions inside
    `nn.Sequential`-style lists (and hence parameter indices) match PyTorch."""

    def __init__(self, name: str):
        fns = {"silu": jax.nn.silu, "relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x)}
        if name not in fns:
            raise ValueError(f"Activation: unknown name {name!r}; allowed: {sorted(fns)}")
        self.name = name
        self._fn = fns[name]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._fn(x)
