"""Every random draw of one training step, made explicit (docs/release_semantics.md, Training).

The loss is a pure function of the parameters, the batch and a `Draws`; the step draws
them from one PRNG key. Tests hand the same `Draws` to the torch reference of the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from controlnext_jax.training.dropout import draw_r
from controlnext_jax.training.sigmas import CosineInterpolated


class Draws(NamedTuple):
    sigma: jax.Array  # (b,) noise level per video
    noise: jax.Array  # (b, f, h, w, c) standard normal, the latent noise (times sigma)
    latent_eps: jax.Array  # (b, f, h, w, c) standard normal, the VAE posterior draw of the targets
    image_noise: jax.Array  # (b, H, W, 3) standard normal, the reference's 0.02 noise augmentation
    dropout_r: jax.Array  # (b,) U(0, 1), the conditioning dropout draw
    crop_u: jax.Array | None = None  # (b, 2) U(0, 1), objective=vae: where its training crop lies


def draw(key: jax.Array, *, batch: int, frames: int, height: int, width: int, latent_hw: tuple[int, int],
         latent_channels: int = 4, sigma_sampler=CosineInterpolated()) -> Draws:
    """All draws of a step for videos (batch, frames, height, width, 3) with latents of `latent_hw`."""
    k_sigma, k_noise, k_eps, k_image, k_r = jax.random.split(key, 5)
    k_crop = jax.random.fold_in(key, 5)  # apart from the split, so the other draws keep their values
    latent_shape = (batch, frames, *latent_hw, latent_channels)
    return Draws(sigma=sigma_sampler(k_sigma, (batch,)),
                 noise=jax.random.normal(k_noise, latent_shape, jnp.float32),
                 latent_eps=jax.random.normal(k_eps, latent_shape, jnp.float32),
                 image_noise=jax.random.normal(k_image, (batch, height, width, 3), jnp.float32),
                 dropout_r=draw_r(k_r, batch), crop_u=jax.random.uniform(k_crop, (batch, 2), jnp.float32))
