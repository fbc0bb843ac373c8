"""The SVD autoencoder: a 2-D KL encoder and a temporal decoder (diffusers `AutoencoderKLTemporalDecoder`).

Images and latents are channels-last: images `(n, H, W, 3)` in [-1, 1], latents
`(n, H/8, W/8, 4)` for the full-size configuration. The decoder sees a clip as
`(b*f, h, w, 4)` and mixes information across the `f` frames of each clip
(`num_frames`), so frames of one clip must be contiguous.

Scaling by `scaling_factor` is left to the caller, as in the original pipeline:
`decode` takes unscaled latents and `encode*` returns unscaled ones.

Norm epsilons (checked against diffusers): every GroupNorm uses 32 groups; the encoder
and the decoder's spatial parts use eps 1e-6, the decoder's temporal residual blocks
eps 1e-5. The decoder's blend is `alpha = 1 - sigmoid(mix_factor)` on the spatial
branch (strategy "learned", switched), independent of the image-only indicator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.models.attention import Attention
from controlnext_jax.models.config_dict import config_from_dict
from controlnext_jax.models.layers import NORM_GROUPS, Conv, Dtype, GroupNorm
from controlnext_jax.models.resnet import Downsample2D, ResnetBlock2D, SpatioTemporalResBlock, Upsample2D

_EPS = 1e-6
_TEMPORAL_EPS = 1e-5
_DOWN_BLOCK_TYPES = ("DownEncoderBlock2D",)


@dataclass(frozen=True)
class VAEConfig:
    """The fields of the diffusers `AutoencoderKLTemporalDecoder` config.json."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    sample_size: int = 768
    scaling_factor: float = 0.18215
    force_upcast: bool = True

    def __post_init__(self):
        bad = [t for t in self.down_block_types if t not in _DOWN_BLOCK_TYPES]
        if bad:
            raise UserError(f"VAEConfig.down_block_types: unsupported {bad}; allowed: {list(_DOWN_BLOCK_TYPES)}")
        if len(self.down_block_types) != len(self.block_out_channels):
            raise UserError(f"VAEConfig.down_block_types has {len(self.down_block_types)} entries but "
                             f"block_out_channels has {len(self.block_out_channels)}; they must be equal")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> VAEConfig:
        """From a diffusers config.json (the policy of `config_dict`)."""
        return config_from_dict(cls, d, source=source)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ----------------------------------------------------------------------------- encoder


class DownEncoderBlock2D(nnx.Module):
    """Residual blocks without time embedding, then an optional stride-2 conv (right/bottom padded)."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, add_downsample: bool,
                 dtype: Dtype | None, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=None,
                          groups=NORM_GROUPS, eps=_EPS, **kw)
            for i in range(num_layers)])
        self.downsamplers = nnx.List([Downsample2D(out_channels, padding=0, **kw)]) if add_downsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, None)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UNetMidBlock2D(nnx.Module):
    """resnet, then (single-head self-attention with GroupNorm and residual, resnet)."""

    def __init__(self, channels: int, *, dtype: Dtype | None, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attentions = nnx.List([
            Attention(channels, heads=1, dim_head=channels, bias=True, norm_num_groups=NORM_GROUPS, eps=_EPS,
                      residual_connection=True, **kw)])
        self.resnets = nnx.List([
            ResnetBlock2D(channels, channels, temb_channels=None, groups=NORM_GROUPS, eps=_EPS, **kw)
            for _ in range(2)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x, None)
        x = self.attentions[0](x)
        return self.resnets[1](x, None)


class Encoder(nnx.Module):
    """Images (n, H, W, in) -> moments (n, H/2^(L-1), W/2^(L-1), 2*latent) (mean and logvar stacked)."""

    def __init__(self, config: VAEConfig, *, dtype: Dtype | None, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = config.block_out_channels
        self.conv_in = Conv(config.in_channels, ch[0], 3, padding=1, **kw)
        self.down_blocks = nnx.List([
            DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], num_layers=config.layers_per_block,
                               add_downsample=i < len(ch) - 1, **kw)
            for i in range(len(ch))])
        self.mid_block = UNetMidBlock2D(ch[-1], **kw)
        self.conv_norm_out = GroupNorm(NORM_GROUPS, ch[-1], epsilon=_EPS, param_dtype=param_dtype, rngs=rngs)
        self.conv_out = Conv(ch[-1], 2 * config.latent_channels, 3, padding=1, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        # 1. stem and down path: (n, H, W, in) -> (n, h, w, ch[-1])
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        # 2. middle
        x = self.mid_block(x)
        # 3. head: (n, h, w, ch[-1]) -> (n, h, w, 2*latent)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


# ----------------------------------------------------------------------------- temporal decoder


def _st_resblock(in_channels: int, out_channels: int, kw: dict) -> SpatioTemporalResBlock:
    # mix_factor starts at 0 (alpha 0.5); "switched" means sigmoid(mix_factor) weighs the temporal branch
    return SpatioTemporalResBlock(in_channels, out_channels, temb_channels=None, eps=_EPS,
                                  temporal_eps=_TEMPORAL_EPS, merge_factor=0.0,
                                  switch_spatial_to_temporal_mix=True, **kw)


class MidBlockTemporalDecoder(nnx.Module):
    """resnets[0], then attention 0 followed by resnets[1].

    As in diffusers, there is exactly one attention and the pairing of attentions with
    `resnets[1:]` stops at it: with one layer the attention is built but never run,
    with more than two layers resnets[2:] are built but never run.
    """

    def __init__(self, channels: int, *, num_layers: int, dtype: Dtype | None, param_dtype: Dtype,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([_st_resblock(channels, channels, kw) for _ in range(num_layers)])
        self.attentions = nnx.List([
            Attention(channels, heads=1, dim_head=channels, bias=True, norm_num_groups=NORM_GROUPS, eps=_EPS,
                      residual_connection=True, **kw)])

    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        x = self.resnets[0](x, None, num_frames)
        for resnet, attn in zip(self.resnets[1:], self.attentions):
            x = resnet(attn(x), None, num_frames)
        return x


class UpBlockTemporalDecoder(nnx.Module):
    """Spatio-temporal residual blocks, then an optional nearest x2 upsampling conv."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, add_upsample: bool,
                 dtype: Dtype | None, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([_st_resblock(in_channels if i == 0 else out_channels, out_channels, kw)
                                 for i in range(num_layers)])
        self.upsamplers = nnx.List([Upsample2D(out_channels, **kw)]) if add_upsample else None

    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, None, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class TemporalDecoder(nnx.Module):
    """Latents (b*f, h, w, latent) -> frames (b*f, h*2^(L-1), w*2^(L-1), out)."""

    def __init__(self, config: VAEConfig, *, dtype: Dtype | None, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = config.block_out_channels
        rev = tuple(reversed(ch))
        self.conv_in = Conv(config.latent_channels, ch[-1], 3, padding=1, **kw)
        self.mid_block = MidBlockTemporalDecoder(ch[-1], num_layers=config.layers_per_block, **kw)
        self.up_blocks = nnx.List([
            UpBlockTemporalDecoder(rev[max(i - 1, 0)], rev[i], num_layers=config.layers_per_block + 1,
                                   add_upsample=i < len(ch) - 1, **kw)
            for i in range(len(ch))])
        self.conv_norm_out = GroupNorm(NORM_GROUPS, ch[0], epsilon=_EPS, param_dtype=param_dtype, rngs=rngs)
        self.conv_out = Conv(ch[0], config.out_channels, 3, padding=1, **kw)
        self.time_conv_out = Conv(config.out_channels, config.out_channels, (3, 1, 1), padding=(1, 0, 0), **kw)

    def __call__(self, z: jax.Array, num_frames: int) -> jax.Array:
        # 1. stem, middle and up path: (b*f, h, w, latent) -> (b*f, H, W, ch[0])
        x = self.conv_in(z)
        x = self.mid_block(x, num_frames)
        for block in self.up_blocks:
            x = block(x, num_frames)
        # 2. per-frame head: (b*f, H, W, ch[0]) -> (b*f, H, W, out)
        x = self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
        # 3. temporal smoothing over each clip's frames
        bf, h, w, c = x.shape
        # (b*f, H, W, out) -> (b, f, H, W, out)
        x = self.time_conv_out(x.reshape(bf // num_frames, num_frames, h, w, c))
        # (b, f, H, W, out) -> (b*f, H, W, out)
        return x.reshape(bf, h, w, c)


# ----------------------------------------------------------------------------- autoencoder


class AutoencoderKLTemporalDecoder(nnx.Module):
    """`encoder`, `quant_conv` (1x1 on the moments) and `decoder`, named as in diffusers."""

    def __init__(self, config: VAEConfig, *, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.encoder = Encoder(config, **kw)
        self.decoder = TemporalDecoder(config, **kw)
        moments = 2 * config.latent_channels
        self.quant_conv = Conv(moments, moments, 1, **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images (n, H, W, in) in [-1, 1] -> (mean, logvar), each (n, h, w, latent).

        logvar is clamped to [-30, 20], as diffusers' DiagonalGaussianDistribution does.
        """
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def encode_mode(self, x: jax.Array) -> jax.Array:
        """The posterior mean (`latent_dist.mode()`): what the pipeline conditions on."""
        return self.encode(x)[0]

    def encode_sample(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """A posterior draw `mean + exp(logvar / 2) * eps`, eps = `jax.random.normal(key, mean.shape)`
        (`latent_dist.sample()`): what training encodes its target frames with."""
        mean, logvar = self.encode(x)
        eps = jax.random.normal(key, mean.shape, jnp.float32)
        z = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps
        return z.astype(mean.dtype)

    def decode(self, z: jax.Array, num_frames: int) -> jax.Array:
        """Unscaled latents (b*f, h, w, latent), clips of `num_frames` contiguous frames -> (b*f, H, W, out).

        The caller divides by `config.scaling_factor` first, as the pipeline does.
        """
        if z.shape[0] % num_frames:
            raise ValueError(f"decode: {z.shape[0]} latent frames are not a whole number of "
                             f"clips of num_frames={num_frames}")
        return self.decoder(z, num_frames)
