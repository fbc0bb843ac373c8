"""Attention with bounded logits memory: the same softmax(q k^T / sqrt(d)) v in pieces (docs/sampling.md, Memory saving).

`jax.nn.dot_product_attention`'s XLA implementation materialises the (batch, heads,
queries, keys) logits and probabilities. At the endpoint's 1024x576 the UNet's first
level attends over 128x72 = 9216 latent positions, so one 24-frame window's logits are
24 x 5 x 9216^2 float32 = 41 GB, more than the whole 24 GB budget of the memory-saving
mode. Here the batch and, when one batch element alone is too big, its queries are cut
into pieces that go through the plain attention one after another (`lax.map`, a loop
XLA cannot run in parallel), so at most `MAX_LOGITS` logits exist at a time. Every
query row still sees all keys in one softmax: no online-softmax rescaling, the same
arithmetic per row as the unchunked call. cuDNN's flash attention bounds memory too
(and faster) on a GPU with bfloat16/float16; this works on every backend and dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# logits (and as many probabilities) held at a time: 2^27 float32 = 512 MiB
MAX_LOGITS = 2**27


def chunked_dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """q (n, t, heads, d), k and v (n, s, heads, d) -> (n, t, heads, d), as `jax.nn.dot_product_attention`."""
    n, t, heads, _ = q.shape
    s = k.shape[1]
    per_element = t * heads * s
    if n * per_element <= MAX_LOGITS:
        return jax.nn.dot_product_attention(q, k, v)
    if per_element <= MAX_LOGITS:
        # whole batch elements per piece: (pieces, group, ...), padded with copies of element 0
        group = MAX_LOGITS // per_element
        pieces = math.ceil(n / group)
        q, k, v = (_pad_split(a, 0, pieces * group, group) for a in (q, k, v))
        out = jax.lax.map(lambda qkv: jax.nn.dot_product_attention(*qkv), (q, k, v))
        return out.reshape(pieces * group, *out.shape[2:])[:n]
    # one batch element at a time, its queries in pieces of `rows`
    pieces = math.ceil(per_element / MAX_LOGITS)
    rows = math.ceil(t / pieces)

    def element(qkv):
        qe, ke, ve = qkv  # (t, heads, d), (s, heads, d), (s, heads, d)
        qp = _pad_split(qe, 0, pieces * rows, rows)  # (pieces, rows, heads, d)
        out = jax.lax.map(lambda qc: jax.nn.dot_product_attention(qc[None], ke[None], ve[None])[0], qp)
        return out.reshape(pieces * rows, *out.shape[2:])[:t]

    return jax.lax.map(element, (q, k, v))


def _pad_split(a: jax.Array, axis: int, padded: int, size: int) -> jax.Array:
    """`a` padded along `axis` (with copies of its first entry, so pieces stay finite) to `padded`,
    then split into (padded // size, size) along that axis; axis must be 0."""
    assert axis == 0
    if padded > a.shape[0]:
        fill = jnp.broadcast_to(a[:1], (padded - a.shape[0], *a.shape[1:]))
        a = jnp.concatenate([a, fill])
    return a.reshape(padded // size, size, *a.shape[1:])
