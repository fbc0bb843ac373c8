"""Timestep embeddings (diffusers `Timesteps` + `TimestepEmbedding`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.layers import Dtype, Linear
from controlnext_jax.sharding.logical_axes import EMBED, MLP


def timestep_embedding(timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool,
                       downscale_freq_shift: float, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal projection of (possibly fractional) timesteps `(n,) -> (n, dim)`, float32."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - downscale_freq_shift)
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """linear_1 -> SiLU -> linear_2 (`out_dim` defaults to `time_embed_dim`, as in diffusers)."""

    def __init__(self, in_channels: int, time_embed_dim: int, *, out_dim: int | None = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.linear_1 = Linear(in_channels, time_embed_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_2 = Linear(time_embed_dim, out_dim or time_embed_dim, dtype=dtype, param_dtype=param_dtype,
                               axes=(MLP, EMBED), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))
