"""Spatio-temporal transformer of the SVD UNet (diffusers `TransformerSpatioTemporalModel`,
`BasicTransformerBlock`, `TemporalBasicTransformerBlock`).

Tokens are channels-last. Spatial blocks attend over the `h*w` positions of each frame,
`(b*f, h*w, c)`; temporal blocks attend over the `f` frames of each position,
`(b*h*w, f, c)`; the two layouts are one transpose apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.attention import Attention, FeedForward
from controlnext_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from controlnext_jax.models.layers import NORM_GROUPS, Dtype, GroupNorm, LayerNorm, Linear
from controlnext_jax.models.resnet import AlphaBlender
from controlnext_jax.sharding.logical_axes import EMBED, MLP


class BasicTransformerBlock(nnx.Module):
    """Pre-LayerNorm self-attention, cross-attention (when `cross_attention_dim` is set) and GEGLU MLP."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, *,
                 cross_attention_dim: int | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        attn = dict(heads=num_attention_heads, dim_head=attention_head_dim, **kw)
        self.norm1 = LayerNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.attn1 = Attention(dim, **attn)
        if cross_attention_dim is not None:
            self.norm2 = LayerNorm(dim, param_dtype=param_dtype, rngs=rngs)
            self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, **attn)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.ff = FeedForward(dim, **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        # x: (n, t, dim); context: (n, s, cross_attention_dim)
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class TemporalBasicTransformerBlock(nnx.Module):
    """Transformer block across frames: an input MLP (`norm_in`/`ff_in`), then as BasicTransformerBlock.

    The residuals around `ff_in` and `ff` exist only when `dim == time_mix_inner_dim`,
    as in diffusers (`is_res`).
    """

    def __init__(self, dim: int, time_mix_inner_dim: int, num_attention_heads: int, attention_head_dim: int, *,
                 cross_attention_dim: int | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        attn = dict(heads=num_attention_heads, dim_head=attention_head_dim, **kw)
        inner = time_mix_inner_dim
        self.is_res = dim == inner
        self.norm_in = LayerNorm(dim, param_dtype=param_dtype, rngs=rngs)
        self.ff_in = FeedForward(dim, inner, **kw)
        self.norm1 = LayerNorm(inner, param_dtype=param_dtype, rngs=rngs)
        self.attn1 = Attention(inner, **attn)
        if cross_attention_dim is not None:
            self.norm2 = LayerNorm(inner, param_dtype=param_dtype, rngs=rngs)
            self.attn2 = Attention(inner, cross_attention_dim=cross_attention_dim, **attn)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(inner, param_dtype=param_dtype, rngs=rngs)
        self.ff = FeedForward(inner, **kw)

    def __call__(self, x: jax.Array, num_frames: int, context: jax.Array | None = None) -> jax.Array:
        # x: (b*f, t, c); context: (b*t, s, d), one row per spatial position
        bf, t, c = x.shape
        b = bf // num_frames
        # (b*f, t, c) -> (b, t, f, c) -> (b*t, f, c)
        x = x.reshape(b, num_frames, t, c).transpose(0, 2, 1, 3).reshape(b * t, num_frames, c)

        h = self.ff_in(self.norm_in(x))
        x = h + x if self.is_res else h
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        h = self.ff(self.norm3(x))
        x = h + x if self.is_res else h

        c = x.shape[-1]
        # (b*t, f, c) -> (b, f, t, c) -> (b*f, t, c)
        return x.reshape(b, t, num_frames, c).transpose(0, 2, 1, 3).reshape(bf, t, c)


class TransformerSpatioTemporalModel(nnx.Module):
    """GroupNorm, proj_in, [spatial block, temporal block with frame-position embedding, blend] x
    num_layers, proj_out, residual."""

    def __init__(self, num_attention_heads: int, attention_head_dim: int, in_channels: int, *,
                 num_layers: int = 1, cross_attention_dim: int | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = num_attention_heads * attention_head_dim
        if inner != in_channels:  # the frame embedding (in_channels wide) is added to inner_dim tokens
            raise ValueError(f"TransformerSpatioTemporalModel: heads*head_dim={inner} must equal "
                             f"in_channels={in_channels}")
        self.in_channels = in_channels
        self.norm = GroupNorm(NORM_GROUPS, in_channels, epsilon=1e-6, param_dtype=param_dtype, rngs=rngs)
        self.proj_in = Linear(in_channels, inner, **kw)
        self.transformer_blocks = nnx.List([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim, **kw)
            for _ in range(num_layers)])
        self.temporal_transformer_blocks = nnx.List([
            TemporalBasicTransformerBlock(inner, inner, num_attention_heads, attention_head_dim,
                                          cross_attention_dim=cross_attention_dim, **kw)
            for _ in range(num_layers)])
        self.time_pos_embed = TimestepEmbedding(in_channels, in_channels * 4, out_dim=in_channels, **kw)
        # diffusers' `learned_with_images` blend with image_only_indicator all zero (SVD): sigmoid(mix_factor)
        self.time_mixer = AlphaBlender(0.5)
        self.proj_out = Linear(inner, in_channels, axes=(MLP, EMBED), **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None, num_frames: int) -> jax.Array:
        # x: (b*f, h, w, c); context: (b*f, s, d), identical across the frames of a video
        bf, h, w, c = x.shape
        b = bf // num_frames
        residual = x

        # 1. temporal context: the first frame's context of each video, one copy per spatial position
        time_context = None
        if context is not None:
            s, d = context.shape[1:]
            # (b*f, s, d) -> (b, s, d) -> (b*h*w, s, d)
            first = context.reshape(b, num_frames, s, d)[:, 0]
            time_context = jnp.broadcast_to(first[:, None], (b, h * w, s, d)).reshape(b * h * w, s, d)

        # 2. input projection, (b*f, h, w, c) -> (b*f, h*w, c)
        x = self.norm(x).reshape(bf, h * w, c)
        x = self.proj_in(x)

        # 3. frame-index embedding, the same for every video: (f, c) -> broadcast over (b, f, h*w, c)
        frame_emb = timestep_embedding(jnp.arange(num_frames), self.in_channels, flip_sin_to_cos=True,
                                       downscale_freq_shift=0.0)
        frame_emb = self.time_pos_embed(frame_emb.astype(x.dtype))

        # 4. spatial block, temporal block on the embedded tokens, learned blend
        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            x = block(x, context)
            inner = x.shape[-1]
            # (b*f, h*w, c) -> (b, f, h*w, c) + (1, f, 1, c) -> (b*f, h*w, c)
            x_mix = (x.reshape(b, num_frames, h * w, inner) + frame_emb[None, :, None, :].astype(x.dtype))
            x_mix = temporal_block(x_mix.reshape(bf, h * w, inner), num_frames, time_context)
            x = self.time_mixer(x, x_mix)

        # 5. output projection, (b*f, h*w, c) -> (b*f, h, w, c), residual
        x = self.proj_out(x).reshape(bf, h, w, c)
        return x + residual
