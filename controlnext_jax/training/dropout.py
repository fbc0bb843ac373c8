"""Conditioning dropout, as the release draws it (docs/release_semantics.md, Training).

One r ~ U(0, 1) per video decides both drops (InstructPix2Pix's scheme with p = 0.1): the
CLIP embedding is zeroed when r < 2p, the reference latents when p <= r < 3p. So 10% of
videos lose only the embedding, 10% both, 10% only the latents; the pose is never dropped
(the control always sees it), which is what guidance-free sampling expects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# the release's --conditioning_dropout_prob default
CONDITIONING_DROPOUT_PROB = 0.1


def keep_masks(r: jax.Array, p: float = CONDITIONING_DROPOUT_PROB) -> tuple[jax.Array, jax.Array]:
    """r (b,) -> float32 (keep_embedding (b,), keep_image_latents (b,)), 1 = kept, 0 = dropped."""
    keep_embedding = (r >= 2.0 * p).astype(jnp.float32)
    keep_image = 1.0 - ((r >= p) & (r < 3.0 * p)).astype(jnp.float32)
    return keep_embedding, keep_image


def draw_r(key: jax.Array, batch: int) -> jax.Array:
    return jax.random.uniform(key, (batch,), jnp.float32)
