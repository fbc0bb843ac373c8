"""Attention and feed-forward layers (diffusers `Attention` with AttnProcessor2_0, `FeedForward`).

Attention runs through `attend`: on GPU/TPU that is `jax.nn.dot_product_attention`, which
dispatches to cuDNN flash attention when `implementation="cudnn"` is set (see
`set_attention_implementation`). On CPU (implementation None) it is two einsums over
(batch, heads, tokens, dim): XLA:CPU's `dot_product_attention` vmaps its core over the heads
axis and leaves (batch, tokens, heads, dim) operands whose batched matmuls it runs slowly
(BENCHMARKS.md, "CPU lowering"); moving heads next to batch first gives plain batched GEMMs.
Softmax statistics stay float32 in every implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.attention_chunked import chunked_dot_product_attention
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
        if self.implementation == "chunked":  # bounded logits memory (pipeline's memory_saving mode)
            out = chunked_dot_product_attention(q, k, v)
        else:
            out = attend(q, k, v, self.implementation)
        out = self.to_out[0](out.reshape(n, out.shape[1], -1))
        if spatial_shape is not None:
            out = out.reshape(spatial_shape)
        if self.residual_connection:
            out = out + residual
        return out / self.rescale_output_factor


ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn", "einsum")


def _einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v with heads moved next to batch; (n, t, heads, d) in and out."""
    scale = q.shape[-1] ** -0.5
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # (n, heads, t, d)
    logits = jnp.einsum("nhqd,nhkd->nhqk", q * jnp.asarray(scale, q.dtype), k,
                        preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.swapaxes(jnp.einsum("nhqk,nhkd->nhqd", weights, v), 1, 2)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str | None = None) -> jax.Array:
    """Multi-head attention on (n, tokens, heads, dim) operands, returned in that layout.

    `implementation`: None picks "einsum" on CPU (decided at trace time) and
    `jax.nn.dot_product_attention`'s own default elsewhere; "xla"/"cudnn" are passed to
    `jax.nn.dot_product_attention`; "einsum" forces the CPU formulation anywhere."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "einsum" or (implementation is None and jax.default_backend() == "cpu"):
        return _einsum_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def set_attention_implementation(model: nnx.Module, implementation: str | None) -> None:
    """Select the attention backend everywhere in `model`: None (einsum on CPU, XLA's default
    elsewhere), "xla" or "cudnn" (`jax.nn.dot_product_attention`), or "einsum" (see `attend`)."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
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
