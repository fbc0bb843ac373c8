"""Exponential moving average of the trainable parameters (the release's --use_ema option).

diffusers' EMAModel without warmup: at the n-th optimizer update the decay is
min(decay, (1 + k) / (10 + k)) with k = n - 1 (0 at the first update, so the average
starts at the parameters), and ema <- decay * ema + (1 - decay) * params, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay(update_count: jax.Array, decay: float) -> jax.Array:
    k = jnp.maximum(update_count.astype(jnp.float32) - 1.0, 0.0)
    return jnp.where(k <= 0, 0.0, jnp.minimum(decay, (1.0 + k) / (10.0 + k)))


def ema_update(ema, params, update_count: jax.Array, decay: float):
    d = ema_decay(update_count, decay)
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p.astype(e.dtype), ema, params)
