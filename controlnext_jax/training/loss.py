"""The release's training loss for one batch (docs/release_semantics.md, Training).

SVD's preconditioning with v-prediction, *not* EDM's: the noisy latents are
latents + sigma * noise, the UNet sees them scaled by 1 / sqrt(sigma^2 + 1) with
c_noise = 0.25 ln sigma, and its output becomes the clean estimate
out * (-sigma / sqrt(sigma^2 + 1)) + noisy / (sigma^2 + 1) (the sampler's own functions).
The loss is mean(weight * hand_weight * (denoised - latents)^2), weight = (1 + sigma^2) / sigma^2;
our optional figure weight (`figure_weight`) multiplies in the same way.

Conditioning as in sampling (the shared `encode_reference` / `controlled_v`): CLIP on the
reference before its 0.02 noise augmentation, the VAE mean of the noised reference unscaled;
then the conditioning dropout. Targets are VAE posterior *draws* times the scaling factor.
Scheduler maths and the loss are float32; the networks run in the parameters' dtype.
The release casts sigma to bf16 before use; we keep it float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from controlnext_jax.models.controlnext_svd import controlled_v, encode_reference
from controlnext_jax.sampling.conditioning import TRAINING_ADDED_TIME_IDS
from controlnext_jax.sampling.scheduler import denoised_from_v, scale_model_input
from controlnext_jax.training.draws import Draws
from controlnext_jax.training.dropout import CONDITIONING_DROPOUT_PROB, keep_masks
from controlnext_jax.training.hand_mask import pool_to_latent

NOISE_AUG_STRENGTH = TRAINING_ADDED_TIME_IDS[2]  # the reference's pixel noise, also fed as a time id


class Models(NamedTuple):
    """The four networks, merged (nnx modules), all in the compute dtype."""

    unet: object
    controlnext: object
    vae: object
    image_encoder: object


def loss_weight(sigma: jax.Array) -> jax.Array:
    """The release's per-sample weight of the squared error of the clean estimate, (1 + sigma^2) / sigma^2."""
    return (1.0 + sigma * sigma) / (sigma * sigma)


def target_latents(vae, frames: jax.Array, eps: jax.Array, scaling_factor: float, dtype) -> jax.Array:
    """frames (b, f, H, W, 3) in [-1, 1] -> float32 (b, f, h, w, c): a posterior draw
    mean + exp(logvar / 2) * eps (diffusers' `latent_dist.sample()`) times the scaling factor."""
    b, f = frames.shape[:2]
    # (b, f, H, W, 3) -> (b*f, H, W, 3)
    mean, logvar = vae.encode(frames.reshape(b * f, *frames.shape[2:]).astype(dtype))
    z = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps.reshape(mean.shape)
    return (z * scaling_factor).reshape(b, f, *z.shape[1:])


def diffusion_loss(models: Models, batch: dict, draws: Draws, *, scaling_factor: float, dtype,
                   dropout_prob: float = CONDITIONING_DROPOUT_PROB, control_scale: float = 1.0
                   ) -> tuple[jax.Array, dict]:
    """batch: `frames` (b, f, H, W, 3) in [-1, 1] whose frame 0 is the reference, `poses`
    (b, f, H, W, 3) in [0, 1] whose frame 0 is the reference's pose (`batch.place_reference_first`),
    optional `hand_weight` (b, f, H, W) (`hand_mask.hand_weight`) and `figure_weight` (b, f, H, W)
    (`figure_weight.figure_weight`). `control_scale` multiplies the control's weight 0.2 in the
    UNet (the release trains at 1.0; `controlnext_cond_scale` at inference). Returns (scalar
    float32 loss, {"per_video": (b,)})."""
    frames, poses = batch["frames"], batch["poses"]
    b, f = frames.shape[:2]

    # 1. reference conditioning: CLIP embedding (b, D) and unscaled latents (b, h, w, c)
    embeds, ref_latents = encode_reference(models.image_encoder, models.vae, frames[:, 0], draws.image_noise,
                                           NOISE_AUG_STRENGTH, clip_dtype=dtype, vae_dtype=dtype)
    # 2. targets: posterior draws of every frame, scaled: (b, f, h, w, c)
    latents = target_latents(models.vae, frames, draws.latent_eps, scaling_factor, dtype)

    # 3. conditioning dropout from one r per video; the pose is never dropped
    keep_embedding, keep_image = keep_masks(draws.dropout_r, dropout_prob)
    context = (embeds * keep_embedding[:, None])[:, None, :]  # (b, 1, D)
    ref_latents = ref_latents * keep_image[:, None, None, None]
    ref_latents = jnp.broadcast_to(ref_latents[:, None], latents.shape)  # repeated over frames

    # 4. SVD's preconditioning: noise, scale the input, c_noise = 0.25 ln sigma
    sigma = draws.sigma.astype(jnp.float32)
    s = sigma[:, None, None, None, None]
    noisy = latents + draws.noise * s
    c_noise = 0.25 * jnp.log(sigma)

    # 5. ControlNeXt control from the poses, then the controlled UNet's v-prediction
    control = models.controlnext(poses.astype(dtype), c_noise)  # (b*f, hc, wc, C)
    ids = jnp.asarray(TRAINING_ADDED_TIME_IDS, jnp.float32)
    v = controlled_v(models.unet, scale_model_input(noisy, s), ref_latents, c_noise, context, ids, control,
                     jnp.float32(control_scale), unet_dtype=dtype)

    # 6. weighted squared error of the clean estimate, hand regions weighted up
    denoised = denoised_from_v(v, noisy, s)
    err = loss_weight(s) * jnp.square(denoised - latents)
    for key in ("hand_weight", "figure_weight"):
        if batch.get(key) is not None:
            err = err * pool_to_latent(batch[key], latents.shape[2:4])
    per_video = jnp.mean(err.reshape(b, -1), axis=1)
    return jnp.mean(per_video), {"per_video": per_video}
