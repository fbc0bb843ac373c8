"""Attention and feed-forward layers (diffusers `Attention` with AttnProcessor2_0, `FeedForward`).

Attention runs through `jax.nn.dot_product_attention`, which dispatches to cuDNN flash
attention on GPU when `implementation="cudnn"` is set (see `set_attention_implementation`);
softmax statistics stay float32 in every implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.layers import Dtype, GroupNorm, Linear
from controlnext_jax.sharding.logical_axes import EMBED, HEADS, MLP


class Attention(nnx.Module):
    """Multi-head attention: `to_q`, `to_k`, `to_v`, `to_out.0`.

    `norm_num_groups` adds the input GroupNorm and `residual_connection` the skip that
    the VAE's spatial attention uses; `(n, h, w, c)` input is attended as `(n, h*w, c)`.
    """

    def __init__(self, query_dim: int, *, cross_attention_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, bias: bool = False, out_bias: bool = True,
                 norm_num_groups: int | None = None, eps: float = 1e-5, residual_connection: bool = False,
                 rescale_output_factor: float = 1.0, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        inner = heads * dim_head
        kv_dim = cross_attention_dim or query_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = heads
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor
        self.implementation: str | None = None
        self.group_norm = (GroupNorm(norm_num_groups, query_dim, epsilon=eps, param_dtype=param_dtype, rngs=rngs)
                           if norm_num_groups else None)
        self.to_q = Linear(query_dim, inner, use_bias=bias, axes=(EMBED, HEADS), **kw)
        self.to_k = Linear(kv_dim, inner, use_bias=bias, axes=(EMBED, HEADS), **kw)
        self.to_v = Linear(kv_dim, inner, use_bias=bias, axes=(EMBED, HEADS), **kw)
        self.to_out = nnx.List([Linear(inner, query_dim, use_bias=out_bias, axes=(HEADS, EMBED), **kw)])

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        residual = x
        spatial_shape = x.shape if x.ndim == 4 else None
        if spatial_shape is not None:  # (n, h, w, c) -> (n, h*w, c)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.group_norm is not None:
            x = self.group_norm(x)
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        n = q.shape[0]
        # (n, t, heads*d) -> (n, t, heads, d)
        q, k, v = (a.reshape(n, a.shape[1], self.heads, -1) for a in (q, k, v))
        out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        out = self.to_out[0](out.reshape(n, out.shape[1], -1))
        if spatial_shape is not None:
            out = out.reshape(spatial_shape)
        if self.residual_connection:
            out = out + residual
        return out / self.rescale_output_factor


def set_attention_implementation(model: nnx.Module, implementation: str | None) -> None:
    """Select the `jax.nn.dot_product_attention` backend ("xla", "cudnn" or None) everywhere in `model`."""
    if implementation not in (None, "xla", "cudnn"):
        raise ValueError(f"attention implementation must be None, 'xla' or 'cudnn', got {implementation!r}")
    for _, module in model.iter_modules():
        if hasattr(module, "implementation"):  # Attention here, CLIPAttention in clip_vision.py
            module.implementation = implementation


class GEGLU(nnx.Module):
    """proj -> split -> x * gelu(gate) (exact erf GELU, as torch's F.gelu)."""

    def __init__(self, dim_in: int, dim_out: int, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.proj = Linear(dim_in, dim_out * 2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, gate = jnp.split(self.proj(x), 2, axis=-1)
        return x * jax.nn.gelu(gate, approximate=False)


class FeedForward(nnx.Module):
    """GEGLU feed-forward: `net.0` (GEGLU), `net.1` (dropout, no parameters), `net.2` (Linear)."""

    def __init__(self, dim: int, dim_out: int | None = None, *, mult: int = 4, inner_dim: int | None = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        inner = inner_dim or dim * mult
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # index 1 is torch's Dropout(0.0): kept as an identity so parameter indices match
        self.net = nnx.List([GEGLU(dim, inner, **kw), Identity(),
                                Linear(inner, dim_out or dim, axes=(MLP, EMBED), **kw)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.net:
            x = layer(x)
        return x


class Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x
