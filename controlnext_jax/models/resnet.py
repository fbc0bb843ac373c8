"""Residual and resampling blocks (diffusers `resnet.py`, `downsampling.py`, `upsampling.py`).

All tensors are channels-last: images `(n, h, w, c)`, videos `(b, f, h, w, c)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.layers import NORM_GROUPS, Conv, Dtype, GroupNorm, Linear
from controlnext_jax.sharding.logical_axes import axes_metadata


class ResnetBlock2D(nnx.Module):
    """diffusers ResnetBlock2D with `time_embedding_norm="default"`, SiLU, pre-norm."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, temb_channels: int | None = 512,
                 groups: int = NORM_GROUPS, groups_out: int | None = None, eps: float = 1e-6,
                 output_scale_factor: float = 1.0, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        out_channels = out_channels or in_channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output_scale_factor = output_scale_factor
        self.norm1 = GroupNorm(groups, in_channels, epsilon=eps, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = Conv(in_channels, out_channels, 3, padding=1, **kw)
        self.time_emb_proj = Linear(temb_channels, out_channels, **kw) if temb_channels else None
        self.norm2 = GroupNorm(groups_out or groups, out_channels, epsilon=eps, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = Conv(out_channels, out_channels, 3, padding=1, **kw)
        self.conv_shortcut = Conv(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

    def __call__(self, x: jax.Array, temb: jax.Array | None) -> jax.Array:
        # x: (n, h, w, c); temb: (n, temb_channels)
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class Downsample2D(nnx.Module):
    """Stride-2 3x3 convolution (`use_conv=True`; the torch attribute is `conv`)."""

    def __init__(self, channels: int, out_channels: int | None = None, *, padding: int = 1,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.padding = padding
        self.conv = Conv(channels, out_channels or channels, 3, stride=2, padding=padding,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding == 0:  # diffusers pads right/bottom by one in this case
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int, out_channels: int | None = None, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv(channels, out_channels or channels, 3, padding=1,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class TemporalResnetBlock(nnx.Module):
    """Residual block over time: GroupNorm(32) + Conv3d kernel (3, 1, 1) on `(b, f, h, w, c)`."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, temb_channels: int | None = 512,
                 eps: float = 1e-6, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        out_channels = out_channels or in_channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = GroupNorm(NORM_GROUPS, in_channels, epsilon=eps, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = Conv(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), **kw)
        self.time_emb_proj = Linear(temb_channels, out_channels, **kw) if temb_channels else None
        self.norm2 = GroupNorm(NORM_GROUPS, out_channels, epsilon=eps, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = Conv(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), **kw)
        self.conv_shortcut = (Conv(in_channels, out_channels, (1, 1, 1), **kw)
                              if in_channels != out_channels else None)

    def __call__(self, x: jax.Array, temb: jax.Array | None) -> jax.Array:
        # x: (b, f, h, w, c); temb: (b, f, temb_channels)
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, :, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class AlphaBlender(nnx.Module):
    """Learned mix of spatial and temporal features: alpha = sigmoid(mix_factor).

    SVD marks every frame as a video frame (`image_only_indicator` all zero), under
    which diffusers' `learned` and `learned_with_images` strategies coincide; that
    indicator is therefore not an input here.
    """

    def __init__(self, alpha: float, *, switch_spatial_to_temporal_mix: bool = False):
        self.switch_spatial_to_temporal_mix = switch_spatial_to_temporal_mix
        self.mix_factor = nnx.Param(jnp.full((1,), alpha, jnp.float32), **axes_metadata(None))  # a scalar

    def __call__(self, x_spatial: jax.Array, x_temporal: jax.Array) -> jax.Array:
        alpha = jax.nn.sigmoid(self.mix_factor[...].astype(jnp.float32)).astype(x_spatial.dtype)
        if self.switch_spatial_to_temporal_mix:
            alpha = 1.0 - alpha
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class SpatioTemporalResBlock(nnx.Module):
    """ResnetBlock2D per frame, TemporalResnetBlock across frames, learned blend."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, temb_channels: int | None = 512,
                 eps: float = 1e-6, temporal_eps: float | None = None, merge_factor: float = 0.5,
                 switch_spatial_to_temporal_mix: bool = False, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        out_channels = out_channels or in_channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.spatial_res_block = ResnetBlock2D(in_channels, out_channels, temb_channels=temb_channels, eps=eps, **kw)
        self.temporal_res_block = TemporalResnetBlock(out_channels, out_channels, temb_channels=temb_channels,
                                                      eps=temporal_eps if temporal_eps is not None else eps, **kw)
        self.time_mixer = AlphaBlender(merge_factor, switch_spatial_to_temporal_mix=switch_spatial_to_temporal_mix)

    def __call__(self, x: jax.Array, temb: jax.Array | None, num_frames: int) -> jax.Array:
        # x: (b*f, h, w, c); temb: (b*f, d)
        x = self.spatial_res_block(x, temb)
        bf, h, w, c = x.shape
        # (b*f, h, w, c) -> (b, f, h, w, c)
        x_spatial = x.reshape(bf // num_frames, num_frames, h, w, c)
        temb_video = None if temb is None else temb.reshape(bf // num_frames, num_frames, -1)
        x_temporal = self.temporal_res_block(x_spatial, temb_video)
        return self.time_mixer(x_spatial, x_temporal).reshape(bf, h, w, c)
