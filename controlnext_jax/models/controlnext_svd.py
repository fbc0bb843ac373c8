"""The ControlNeXt-SVD composition that sampling and training share.

`encode_reference`: the reference's CLIP embedding and VAE latents (docs/release_semantics.md,
Image encoder, VAE); `controlled_v`: the SVD UNet on [noisy latents, reference latents] with the
ControlNeXt control injected (Control injection). The pipeline's program and the training loss
both call these, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from controlnext_jax.models.clip_preprocess import clip_preprocess


def dtype_of(state) -> jnp.dtype:
    """The dtype of a component's floating parameters (its compute dtype in this project)."""
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype


def encode_reference(clip, vae, reference: jax.Array, image_noise: jax.Array, noise_aug_strength: float, *,
                     clip_dtype, vae_dtype) -> tuple[jax.Array, jax.Array]:
    """reference (n, H, W, 3) in [-1, 1], image_noise standard normal of the same shape ->
    (CLIP embedding (n, D), VAE posterior mean (n, h, w, 4)), both float32.

    CLIP sees the reference *before* the noise augmentation; the VAE sees
    reference + noise_aug_strength * image_noise and its latents are not multiplied by the
    scaling factor (the release does so in sampling and in training)."""
    image_embeds = clip(clip_preprocess(reference).astype(clip_dtype)).astype(jnp.float32)
    noised = reference + noise_aug_strength * image_noise
    image_latents = vae.encode_mode(noised.astype(vae_dtype)).astype(jnp.float32)
    return image_embeds, image_latents


def controlled_v(unet, x_in: jax.Array, image_latents: jax.Array, c_noise: jax.Array, context: jax.Array,
                 added_time_ids: jax.Array, control: jax.Array, control_scale: jax.Array, *, unet_dtype,
                 constrain: Callable = lambda x: x) -> jax.Array:
    """The UNet's float32 v-prediction (b, f, h, w, 4).

    x_in (b, f, h, w, 4): the noisy latents already scaled by 1/sqrt(sigma^2 + 1);
    image_latents (b, f, h, w, 4): the reference latents repeated over frames (zeros where
    dropped); c_noise (b,) or scalar; context (b, 1, D); added_time_ids (b, 3) or (3,);
    control (b*f, hc, wc, C) from the ControlNeXt module; control_scale (b,) or scalar.
    `constrain` places the batch-sized arrays on devices (the pipeline's sharding)."""
    # (b, f, h, w, 4) + (b, f, h, w, 4) -> (b, f, h, w, 8) on channels
    sample = jnp.concatenate([x_in, image_latents.astype(x_in.dtype)], axis=-1)
    ids = jnp.broadcast_to(added_time_ids, (sample.shape[0], added_time_ids.shape[-1]))
    return unet(constrain(sample.astype(unet_dtype)), c_noise, context.astype(unet_dtype), ids,
                constrain(control.astype(unet_dtype)), control_scale).astype(jnp.float32)
