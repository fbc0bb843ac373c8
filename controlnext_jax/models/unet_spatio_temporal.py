"""The Stable Video Diffusion UNet (diffusers `UNetSpatioTemporalConditionModel`) with
ControlNeXt's control injection after down block 0.

Channels-last throughout: `sample` is `(b, f, h, w, in_channels)`. Parameter paths mirror
the diffusers state dict (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.models.config_dict import config_from_dict
from controlnext_jax.models.control_injection import inject_control
from controlnext_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from controlnext_jax.models.layers import NORM_GROUPS, Conv, Dtype, GroupNorm
from controlnext_jax.models.unet_blocks import (
    CrossAttnDownBlockSpatioTemporal,
    CrossAttnUpBlockSpatioTemporal,
    DownBlockSpatioTemporal,
    UNetMidBlockSpatioTemporal,
    UpBlockSpatioTemporal,
)

DOWN_BLOCK_TYPES = ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal")
UP_BLOCK_TYPES = ("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal")


@dataclass(frozen=True)
class UNetConfig:
    """Fields of diffusers' UNetSpatioTemporalConditionModel config.json (defaults = diffusers')."""

    sample_size: int | tuple[int, int] | None = None
    in_channels: int = 8
    out_channels: int = 4
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                                         "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal")
    up_block_types: tuple[str, ...] = ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                                       "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal")
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    addition_time_embed_dim: int = 256
    projection_class_embeddings_input_dim: int = 768
    layers_per_block: int | tuple[int, ...] = 2
    cross_attention_dim: int | tuple[int, ...] = 1024
    transformer_layers_per_block: int | tuple[int, ...] = 1
    num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20)
    num_frames: int = 25  # informational: the model runs on any frame count

    def __post_init__(self):
        n = len(self.block_out_channels)
        for name, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
            bad = [t for t in getattr(self, name) if t not in allowed]
            if bad:
                raise UserError(f"UNetConfig.{name}: unsupported {bad}; allowed: {list(allowed)}")
            if len(getattr(self, name)) != n:
                raise UserError(f"UNetConfig.{name} needs one entry per block_out_channels ({n})")
        for name in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block",
                     "num_attention_heads"):
            v = getattr(self, name)
            if isinstance(v, tuple) and (len(v) != n or not all(isinstance(i, int) for i in v)):
                raise UserError(f"UNetConfig.{name}: {v!r}; allowed: an int or {n} ints")

    def per_block(self, name: str) -> tuple[int, ...]:
        v = getattr(self, name)
        return (v,) * len(self.block_out_channels) if isinstance(v, int) else v

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> UNetConfig:
        """From a diffusers config.json (the policy of `config_dict`)."""
        return config_from_dict(cls, d, source=source)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


class UNetSpatioTemporalConditionModel(nnx.Module):
    def __init__(self, config: UNetConfig, *, dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 remat: bool = False, rngs: nnx.Rngs):
        self.config = config
        # wraps every down/mid/up block in nnx.remat (recompute activations in the backward pass)
        self.remat = remat
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        boc = config.block_out_channels
        n = len(boc)
        heads, xdim = config.per_block("num_attention_heads"), config.per_block("cross_attention_dim")
        layers, tlayers = config.per_block("layers_per_block"), config.per_block("transformer_layers_per_block")
        temb = boc[0] * 4

        self.conv_in = Conv(config.in_channels, boc[0], 3, padding=1, **kw)
        self.time_embedding = TimestepEmbedding(boc[0], temb, **kw)
        self.add_embedding = TimestepEmbedding(config.projection_class_embeddings_input_dim, temb, **kw)

        down = []
        for i, kind in enumerate(config.down_block_types):
            cin, cout, last = boc[max(i - 1, 0)], boc[i], i == n - 1
            if kind == "CrossAttnDownBlockSpatioTemporal":
                down.append(CrossAttnDownBlockSpatioTemporal(
                    cin, cout, temb, num_layers=layers[i], transformer_layers_per_block=tlayers[i],
                    num_attention_heads=heads[i], cross_attention_dim=xdim[i], add_downsample=not last, **kw))
            else:
                down.append(DownBlockSpatioTemporal(cin, cout, temb, num_layers=layers[i],
                                                    add_downsample=not last, **kw))
        self.down_blocks = nnx.List(down)

        self.mid_block = UNetMidBlockSpatioTemporal(boc[-1], temb, transformer_layers_per_block=tlayers[-1],
                                                    num_attention_heads=heads[-1], cross_attention_dim=xdim[-1],
                                                    **kw)

        rboc, rheads, rxdim = boc[::-1], heads[::-1], xdim[::-1]
        rlayers, rtlayers = layers[::-1], tlayers[::-1]
        up = []
        for i, kind in enumerate(config.up_block_types):
            prev, cout, cin = rboc[max(i - 1, 0)], rboc[i], rboc[min(i + 1, n - 1)]
            common = dict(num_layers=rlayers[i] + 1, add_upsample=i < n - 1, **kw)
            if kind == "CrossAttnUpBlockSpatioTemporal":
                up.append(CrossAttnUpBlockSpatioTemporal(
                    cin, cout, prev, temb, transformer_layers_per_block=rtlayers[i], num_attention_heads=rheads[i],
                    cross_attention_dim=rxdim[i], **common))
            else:
                up.append(UpBlockSpatioTemporal(cin, prev, cout, temb, **common))
        self.up_blocks = nnx.List(up)

        self.conv_norm_out = GroupNorm(NORM_GROUPS, boc[0], epsilon=1e-5, param_dtype=param_dtype, rngs=rngs)
        self.conv_out = Conv(boc[0], config.out_channels, 3, padding=1, **kw)

    def _run(self, block: nnx.Module, *args, **static):
        """Call a block, under nnx.remat when enabled; `static` holds Python-valued options."""
        if not self.remat:
            return block(*args, **static)
        return nnx.remat(lambda blk, *a: blk(*a, **static))(block, *args)

    def __call__(self, sample: jax.Array, timestep: jax.Array | float, encoder_hidden_states: jax.Array,
                 added_time_ids: jax.Array, control: jax.Array | None = None,
                 control_scale: jax.Array | float = 1.0) -> jax.Array:
        """sample (b, f, h, w, in_channels); timestep scalar or (b,) (SVD: 0.25*ln(sigma));
        encoder_hidden_states (b, s, cross_attention_dim); added_time_ids (b, 3) = [fps, motion_bucket_id,
        noise_aug] as the pipeline passes them (diffusers' SVD pipeline: fps - 1); control (b*f, hc, wc, block_out_channels[0]) from ControlNeXt, control_scale scalar or (b,).
        Returns (b, f, h, w, out_channels)."""
        cfg = self.config
        b, f, h, w, _ = sample.shape

        # 1. time embedding: sinusoid of the timestep plus the embedded added time ids
        t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (b,))
        t_emb = timestep_embedding(t, cfg.block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0.0)
        emb = self.time_embedding(t_emb.astype(sample.dtype))
        # (b, k) -> (b*k, d) -> (b, k*d)
        ids = timestep_embedding(added_time_ids.reshape(-1), cfg.addition_time_embed_dim, flip_sin_to_cos=True,
                                 downscale_freq_shift=0.0).reshape(b, -1)
        emb = emb + self.add_embedding(ids.astype(emb.dtype))

        # 2. frames into the batch: (b, f, h, w, c) -> (b*f, h, w, c); emb and context repeated per frame
        x = sample.reshape(b * f, h, w, sample.shape[-1])
        emb = jnp.repeat(emb, f, axis=0)
        context = jnp.repeat(encoder_hidden_states, f, axis=0)
        x = self.conv_in(x)

        # 3. down blocks; ControlNeXt's control joins after block 0, its skips stay control-free
        skips = (x,)
        for i, block in enumerate(self.down_blocks):
            x, res = self._run(block, x, emb, context, num_frames=f)
            skips += res
            if i == 0 and control is not None:
                scale = jnp.broadcast_to(jnp.asarray(control_scale, jnp.float32).reshape(-1), (b,))
                x = inject_control(x, control, jnp.repeat(scale, f))

        # 4. mid block
        x = self._run(self.mid_block, x, emb, context, num_frames=f)

        # 5. up blocks, upsampling to the skip's size where the input was not a multiple of 2**(n-1)
        factor = 2 ** (len(self.up_blocks) - 1)
        forward_size = h % factor != 0 or w % factor != 0
        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[-k:], skips[:-k]
            size = tuple(skips[-1].shape[1:3]) if forward_size and i < len(self.up_blocks) - 1 else None
            x = self._run(block, x, res, emb, context, num_frames=f, upsample_size=size)

        # 6. output head
        x = self.conv_out(jax.nn.silu(self.conv_norm_out(x)))

        # 7. (b*f, h, w, c) -> (b, f, h, w, c)
        return x.reshape(b, f, h, w, x.shape[-1])
