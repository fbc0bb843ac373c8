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

import itertools
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


# CPU convolution lowering (docs in `conv_forward`). Below this many output positions per
# image (product of the output's spatial sizes) a k>1 convolution runs as patches @ kernel on
# CPU: XLA:CPU's convolution kernels lose to its matmul at tiny feature maps (4x4 and 2x2,
# above all the 2x2 level of a 16x16 latent, which XLA rewrites into a kernel-copying
# convolution; at 8x8 the two are close and the whole-UNet sweep favoured im2col there),
# while from 16x16 up lax.conv wins: im2col's k*k-times input copy costs more
# than it saves (320 channels at 32x32: 88 ms im2col, 39 ms lax.conv). Quiet-machine sweep of
# 16 .. 1024 in BENCHMARKS.md ("CPU lowering").
IM2COL_MAX_POSITIONS = 64

CONV_LOWERINGS = ("auto", "im2col", "xla")


def _im2col_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                 padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Convolution as one matrix product: the k taps' strided slices of the padded input,
    stacked tap-major / channel-minor, times the kernel reshaped to (taps * in, out).
    x (n, *spatial, in), kernel (*taps, in, out) -> (n, *out_spatial, out)."""
    nd = kernel.ndim - 2
    taps = kernel.shape[:nd]
    x = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    out_sizes = [(x.shape[1 + i] - taps[i]) // strides[i] + 1 for i in range(nd)]
    if all(t == 1 for t in taps) and all(s == 1 for s in strides):
        patches = x
    else:
        cols = []
        for offset in itertools.product(*(range(t) for t in taps)):
            limit = [o + (n - 1) * s + 1 for o, n, s in zip(offset, out_sizes, strides)]
            cols.append(jax.lax.slice(x, (0, *offset, 0), (x.shape[0], *limit, x.shape[-1]), (1, *strides, 1)))
        patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1]))


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
              padding: Sequence[tuple[int, int]]) -> jax.Array:
    nd = kernel.ndim - 2
    spatial = "DHW"[-nd:] if nd <= 3 else None
    dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    return jax.lax.conv_general_dilated(x, kernel, tuple(strides), tuple(padding), dimension_numbers=dn)


def conv_uses_im2col(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
                     padding: Sequence[tuple[int, int]], lowering: str = "auto", platform: str | None = None,
                     max_positions: int | None = None) -> bool:
    """Which lowering `conv_forward` picks: im2col when forced, or ("auto") on CPU for 1x1
    kernels (a plain matmul) and for maps of at most `max_positions` output positions (default
    `IM2COL_MAX_POSITIONS`);
    lax.conv everywhere else (GPU/TPU convolutions are the vendors' kernels: left alone)."""
    if lowering not in CONV_LOWERINGS:
        raise ValueError(f"conv lowering must be one of {CONV_LOWERINGS}, got {lowering!r}")
    if lowering != "auto":
        return lowering == "im2col"
    if (platform or jax.default_backend()) != "cpu":
        return False
    nd = len(kernel_shape) - 2
    if all(k == 1 for k in kernel_shape[:nd]):
        return True
    positions = 1
    for i in range(nd):
        positions *= (x_shape[1 + i] + sum(padding[i]) - kernel_shape[i]) // strides[i] + 1
    return positions <= (IM2COL_MAX_POSITIONS if max_positions is None else max_positions)


def conv_forward(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[tuple[int, int]],
                 lowering: str = "auto", max_positions: int | None = None) -> jax.Array:
    """Channels-last convolution, x (n, *spatial, in) with kernel (*taps, in, out), explicit
    (lo, hi) padding per spatial axis. `lowering`: "xla" (lax.conv_general_dilated), "im2col"
    (one matmul over the taps' slices) or "auto" (`conv_uses_im2col`). Both give the same
    values up to float summation order; the choice is made at trace time, per call shape."""
    if conv_uses_im2col(x.shape, kernel.shape, strides, padding, lowering, max_positions=max_positions):
        return _im2col_conv(x, kernel, strides, padding)
    return _xla_conv(x, kernel, strides, padding)


class TorchConv(nnx.Conv):
    """nnx.Conv (same parameters, paths and metadata) whose forward goes through `conv_forward`,
    so that XLA:CPU runs small convolutions as matmuls. `lowering` ("auto", "im2col", "xla")
    can be set per module or everywhere with `set_conv_lowering`, as can `max_positions` (the
    im2col threshold of "auto"; None: `IM2COL_MAX_POSITIONS`)."""

    lowering: str = "auto"
    max_positions: int | None = None

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        nd = len(self.kernel_size)
        batch_shape = inputs.shape[:inputs.ndim - nd - 1]
        x = inputs.reshape(-1, *inputs.shape[len(batch_shape):])  # one batch axis, as nnx.Conv
        kernel = self.kernel[...]
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = conv_forward(x, kernel, self.strides, self.padding, self.lowering, self.max_positions)
        if bias is not None:
            y = y + bias
        return y.reshape(*batch_shape, *y.shape[1:])


def set_conv_lowering(model: nnx.Module, lowering: str, max_positions: int | None = None) -> None:
    """Set the convolution lowering ("auto", "im2col" or "xla") of every `TorchConv` in `model`,
    and the im2col threshold of "auto" (None: `IM2COL_MAX_POSITIONS`)."""
    if lowering not in CONV_LOWERINGS:
        raise ValueError(f"conv lowering must be one of {CONV_LOWERINGS}, got {lowering!r}")
    for _, module in model.iter_modules():
        if isinstance(module, TorchConv):
            module.lowering = lowering
            module.max_positions = max_positions


def Conv(in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
         stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, use_bias: bool = True,
         dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, axes: tuple[str, str] = (CONV_IN, CONV_OUT),
         rngs: nnx.Rngs) -> TorchConv:
    """torch.nn.Conv2d/Conv3d with torch's symmetric integer padding, channels-last.

    `kernel_size` given as an int means a 2-D square kernel; a sequence sets the rank
    (3 entries for torch Conv3d over (frames, height, width)). `axes`: the logical axes of
    the kernel's (in, out) channels; its spatial taps are never sharded, the bias follows `out`.
    """
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    pad = (padding,) * len(ks) if isinstance(padding, int) else tuple(padding)
    st = (stride,) * len(ks) if isinstance(stride, int) else tuple(stride)
    return TorchConv(in_features, out_features, ks, strides=st, padding=[(p, p) for p in pad],
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
