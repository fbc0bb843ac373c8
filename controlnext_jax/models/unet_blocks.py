"""Down, mid and up blocks of the SVD UNet (diffusers `unets/unet_3d_blocks.py`, `*SpatioTemporal`).

Every block works on frames flattened into the batch, `(b*f, h, w, c)`, with the time
embedding `temb` `(b*f, d)` and the image context `(b*f, s, d)`, and takes `num_frames`
to unflatten where the temporal layers need it. All blocks share one call signature
(blocks without cross-attention ignore `context`), so the UNet loops over them uniformly.

The ResNet GroupNorm epsilon differs by block type, as in diffusers' SVD UNet:
DownBlockSpatioTemporal and the mid block 1e-5, CrossAttnDownBlockSpatioTemporal and
both up blocks 1e-6 (`get_up_block` does not forward the UNet's `resnet_eps`).

Rematerialisation (training's gradient checkpointing): `set_remat(unet, "resnets" |
"transformers" | "both" | "none")` makes the blocks recompute their res-blocks and/or
transformers in the backward pass instead of keeping their activations, the memory
trade the release makes with `unet.enable_gradient_checkpointing()`. It changes no
value, only what the compiled backward pass stores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.models.layers import Dtype
from controlnext_jax.models.resnet import Downsample2D, SpatioTemporalResBlock, Upsample2D
from controlnext_jax.models.transformer_temporal import TransformerSpatioTemporalModel

Residuals = tuple[jax.Array, ...]
REMAT_CHOICES = ("none", "resnets", "transformers", "both")


def _run(module: nnx.Module, remat: bool, x: jax.Array, cond: jax.Array | None, num_frames: int) -> jax.Array:
    """module(x, cond, num_frames), recomputed in the backward pass when `remat`."""
    if not remat:
        return module(x, cond, num_frames)
    # a pure function of the module's state (blocks do not update state in their forward pass):
    # unlike nnx.remat it writes nothing back, so it also runs inside loops traced later (sampling)
    graphdef, state = nnx.split(module)

    def forward(state, x, cond):
        return nnx.merge(graphdef, state)(x, cond, num_frames)

    return jax.checkpoint(forward)(state, x, cond)


class _Block(nnx.Module):
    # what the block recomputes in the backward pass (set_remat); plain attributes, static in the graph
    remat_resnets = False
    remat_attentions = False


def set_remat(unet: nnx.Module, policy: str) -> None:
    """Choose what every block of `unet` rematerialises (REMAT_CHOICES); a static setting,
    so set it before `nnx.split`."""
    if policy not in REMAT_CHOICES:
        raise ValueError(f"remat={policy!r}; allowed: {list(REMAT_CHOICES)}")
    for _, block in unet.iter_modules():
        if isinstance(block, _Block):
            block.remat_resnets = policy in ("resnets", "both")
            block.remat_attentions = policy in ("transformers", "both")


def _transformer(channels: int, heads: int, num_layers: int, cross_attention_dim: int, kw: dict):
    return TransformerSpatioTemporalModel(heads, channels // heads, channels, num_layers=num_layers,
                                          cross_attention_dim=cross_attention_dim, **kw)


def _per_layer(value: int | tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    return (value,) * num_layers if isinstance(value, int) else tuple(value)


def _nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch `F.interpolate(mode="nearest", size=...)` on (n, h, w, c): source index floor(i * in/out)."""
    h, w = x.shape[1:3]
    rows = np.minimum(np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return x[:, rows][:, :, cols]


def _upsample(upsampler: Upsample2D, x: jax.Array, size: tuple[int, int] | None) -> jax.Array:
    if size is None or tuple(size) == (2 * x.shape[1], 2 * x.shape[2]):
        return upsampler(x)
    # diffusers forwards the skip's size when the input is not a multiple of the total down factor
    return upsampler.conv(_nearest_resize(x, size))


class DownBlockSpatioTemporal(_Block):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, num_layers: int = 1,
                 add_downsample: bool = True, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([
            SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels,
                                   temb_channels=temb_channels, eps=1e-5, **kw)
            for i in range(num_layers)])
        self.downsamplers = nnx.List([Downsample2D(out_channels, out_channels, padding=1, **kw)]) \
            if add_downsample else None

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array | None = None, *,
                 num_frames: int) -> tuple[jax.Array, Residuals]:
        del context
        res = ()
        for resnet in self.resnets:
            x = _run(resnet, self.remat_resnets, x, temb, num_frames)
            res += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            res += (x,)
        return x, res


class CrossAttnDownBlockSpatioTemporal(_Block):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple[int, ...] = 1, num_attention_heads: int = 1,
                 cross_attention_dim: int = 1280, add_downsample: bool = True, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nnx.List([
            SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels,
                                   temb_channels=temb_channels, eps=1e-6, **kw)
            for i in range(num_layers)])
        self.attentions = nnx.List([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim, kw)
            for i in range(num_layers)])
        self.downsamplers = nnx.List([Downsample2D(out_channels, out_channels, padding=1, **kw)]) \
            if add_downsample else None

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array | None = None, *,
                 num_frames: int) -> tuple[jax.Array, Residuals]:
        res = ()
        for resnet, attn in zip(self.resnets, self.attentions):
            x = _run(resnet, self.remat_resnets, x, temb, num_frames)
            x = _run(attn, self.remat_attentions, x, context, num_frames)
            res += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            res += (x,)
        return x, res


class UNetMidBlockSpatioTemporal(_Block):
    def __init__(self, in_channels: int, temb_channels: int, *, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple[int, ...] = 1, num_attention_heads: int = 1,
                 cross_attention_dim: int = 1280, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nnx.List([
            SpatioTemporalResBlock(in_channels, in_channels, temb_channels=temb_channels, eps=1e-5, **kw)
            for _ in range(num_layers + 1)])
        self.attentions = nnx.List([
            _transformer(in_channels, num_attention_heads, layers[i], cross_attention_dim, kw)
            for i in range(num_layers)])

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array | None = None, *,
                 num_frames: int) -> jax.Array:
        x = _run(self.resnets[0], self.remat_resnets, x, temb, num_frames)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = _run(attn, self.remat_attentions, x, context, num_frames)
            x = _run(resnet, self.remat_resnets, x, temb, num_frames)
        return x


class UpBlockSpatioTemporal(_Block):
    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int, *,
                 num_layers: int = 1, resnet_eps: float = 1e-6, add_upsample: bool = True,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([
            SpatioTemporalResBlock((prev_output_channel if i == 0 else out_channels)
                                   + (in_channels if i == num_layers - 1 else out_channels),
                                   out_channels, temb_channels=temb_channels, eps=resnet_eps, **kw)
            for i in range(num_layers)])
        self.upsamplers = nnx.List([Upsample2D(out_channels, out_channels, **kw)]) if add_upsample else None

    def __call__(self, x: jax.Array, res: Residuals, temb: jax.Array, context: jax.Array | None = None, *,
                 num_frames: int, upsample_size: tuple[int, int] | None = None) -> jax.Array:
        del context
        for resnet in self.resnets:
            # skips are consumed last-in first-out: (n, h, w, c) ++ (n, h, w, c_skip)
            x = jnp.concatenate([x, res[-1]], axis=-1)
            res = res[:-1]
            x = _run(resnet, self.remat_resnets, x, temb, num_frames)
        if self.upsamplers is not None:
            x = _upsample(self.upsamplers[0], x, upsample_size)
        return x


class CrossAttnUpBlockSpatioTemporal(_Block):
    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int, temb_channels: int, *,
                 num_layers: int = 1, transformer_layers_per_block: int | tuple[int, ...] = 1,
                 resnet_eps: float = 1e-6, num_attention_heads: int = 1, cross_attention_dim: int = 1280,
                 add_upsample: bool = True, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nnx.List([
            SpatioTemporalResBlock((prev_output_channel if i == 0 else out_channels)
                                   + (in_channels if i == num_layers - 1 else out_channels),
                                   out_channels, temb_channels=temb_channels, eps=resnet_eps, **kw)
            for i in range(num_layers)])
        self.attentions = nnx.List([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim, kw)
            for i in range(num_layers)])
        self.upsamplers = nnx.List([Upsample2D(out_channels, out_channels, **kw)]) if add_upsample else None

    def __call__(self, x: jax.Array, res: Residuals, temb: jax.Array, context: jax.Array | None = None, *,
                 num_frames: int, upsample_size: tuple[int, int] | None = None) -> jax.Array:
        for resnet, attn in zip(self.resnets, self.attentions):
            x = jnp.concatenate([x, res[-1]], axis=-1)
            res = res[:-1]
            x = _run(resnet, self.remat_resnets, x, temb, num_frames)
            x = _run(attn, self.remat_attentions, x, context, num_frames)
        if self.upsamplers is not None:
            x = _upsample(self.upsamplers[0], x, upsample_size)
        return x
