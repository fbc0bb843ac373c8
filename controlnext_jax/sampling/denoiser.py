"""SVD's preconditioning around a v-prediction model, and classifier-free guidance (docs/sampling.md).

The one place that turns a network's v-prediction into a clean-sample estimate
(k-diffusion's `Denoiser`): the model sees the sample scaled to unit variance (c_in)
at noise level 0.25 ln(sigma) (c_noise), and denoised = c_skip * x + c_out * v.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from controlnext_jax.sampling.scheduler import denoised_from_v, scale_model_input

# model(x_in (W, B, h, w, c) f32, c_noise, inputs) -> v (W, B, h, w, c)
VModel = Callable[[jax.Array, jax.Array, Any], jax.Array]


def v_prediction_denoiser(model: VModel) -> Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]:
    """denoise(x, sigma, c_noise, inputs) = c_skip(sigma) x + c_out(sigma) model(c_in(sigma) x, c_noise, inputs).

    c_noise is passed in rather than recomputed from sigma so the model gets exactly the
    schedule's timesteps (computed in float64 on the host, as diffusers does)."""

    def denoise(x: jax.Array, sigma: jax.Array, c_noise: jax.Array, inputs: Any) -> jax.Array:
        v = model(scale_model_input(x, sigma), c_noise, inputs)
        return denoised_from_v(v, x, sigma)

    return denoise


def guide(v_uncond: jax.Array, v_cond: jax.Array, guidance: jax.Array) -> jax.Array:
    """uncond + g * (cond - uncond) on the model output, as the release does (before the
    preconditioning, which is affine in v, so this equals guiding the denoised estimate).
    guidance broadcasts against the trailing frame axis: (B,) for (W, B, h, w, c)."""
    g = jnp.asarray(guidance, jnp.float32)[:, None, None, None]
    v_uncond, v_cond = v_uncond.astype(jnp.float32), v_cond.astype(jnp.float32)
    return v_uncond + g * (v_cond - v_uncond)
