"""The VAE objective: the first stage of a model trained from scratch (docs/embedded_model.md).

SVD's autoencoder (a per-frame encoder, a decoder with temporal layers) learns to reconstruct
clips: every frame is encoded to a diagonal Gaussian posterior, a draw
mean + exp(logvar / 2) * eps is decoded with the clip's frames together (`num_frames`, as the
pipeline decodes), and the loss is

    mean |x - decoded| + kl_weight * mean KL(posterior || N(0, 1))

over pixels and latent elements. The small KL weight keeps the latents' scale bounded without
blurring (LDM's autoencoders use a comparable weight); the latents' actual spread is measured
after training and stored as the VAE's `scaling_factor` (`measure_scaling_factor`), as Stable
Diffusion chose its 0.18215, so that scaled latents have unit variance for the diffusion stage.

Slot 0 of a training batch is the reference frame, drawn from anywhere in the video; the
reconstruction uses frames 1.. only, the contiguous window the temporal decoder should see.
With `crop` it reconstructs a random window of that size (at multiples of 8 pixels, the same
for every frame of a clip): the networks are convolutional apart from the mid block's
attention, and the decoder's full-resolution layers dominate the cost, so crops of a quarter
of the frame cut a step's time about four-fold (how SD's autoencoders were trained too).
Losses and statistics are float32; the networks run in `dtype`.

With `weight` (the batch's `figure_weight`, 1 + g inside the figure, `data.figure_weight=g`) the
L1 term is mean(weight * |x - decoded|), cropped with the frames: the figure covers about a
tenth of a synthetic frame, so an unweighted VAE spends its capacity on the backgrounds and
returns figures blurred and recoloured (docs/embedded_model.md, "Where the figure is lost").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

DEFAULT_KL_WEIGHT = 1e-6


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1)) in float32."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


LATENT_ALIGN = 8  # crop offsets are multiples of the VAE's downsampling


def random_crop(clip: jax.Array, crop: tuple[int, int], u: jax.Array) -> jax.Array:
    """clip (b, f, H, W, C), u (b, 2) in [0, 1) -> (b, f, *crop, C): per clip a window whose
    top-left corner is at a multiple of LATENT_ALIGN, chosen by u."""
    height, width = clip.shape[2:4]
    ch, cw = crop
    if ch > height or cw > width or ch % LATENT_ALIGN or cw % LATENT_ALIGN:
        raise ValueError(f"crop {crop}: must be multiples of {LATENT_ALIGN} within the frame {height}x{width}")
    positions = jnp.asarray([(height - ch) // LATENT_ALIGN + 1, (width - cw) // LATENT_ALIGN + 1], jnp.float32)
    corner = (jnp.floor(u * positions).astype(jnp.int32) * LATENT_ALIGN)  # (b, 2)

    def one(video, yx):
        return jax.lax.dynamic_slice(video, (0, yx[0], yx[1], 0), (video.shape[0], ch, cw, video.shape[-1]))

    return jax.vmap(one)(clip, corner)


def vae_loss(vae, frames: jax.Array, eps: jax.Array, *, kl_weight: float = DEFAULT_KL_WEIGHT,
             dtype=jnp.float32, crop: tuple[int, int] | None = None,
             crop_u: jax.Array | None = None, weight: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """frames (b, f, H, W, 3) in [-1, 1] (slot 0 the reference, unused), eps (b, f, h, w, c)
    standard normal (its leading window used with `crop`), `crop_u` (b, 2) U(0, 1) placing the
    crop, `weight` (b, f, H, W) or None: per-pixel L1 weight -> (float32 loss, {"per_video", "l1",
    "kl", "latent_std"}); "l1" is the unweighted mean either way, comparable across runs."""
    clip = frames[:, 1:].astype(jnp.float32)
    if weight is not None:  # one more channel, so that the crop cuts both alike
        clip = jnp.concatenate([clip, weight[:, 1:, ..., None].astype(jnp.float32)], axis=-1)
    if crop is not None:
        clip = random_crop(clip, crop, crop_u)
    if weight is not None:
        clip, weight = clip[..., :-1], clip[..., -1:]
    b, f = clip.shape[:2]
    if f < 1:
        raise ValueError("vae_loss: needs at least 2 frames (slot 0 is the reference)")
    x = clip.reshape(b * f, *clip.shape[2:])
    mean, logvar = vae.encode(x.astype(dtype))
    h, w = mean.shape[1:3]
    eps = eps[:, 1:, :h, :w].reshape(mean.shape)
    z = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps
    decoded = vae.decode(z.astype(dtype), f).astype(jnp.float32)
    error = jnp.abs(decoded - x.astype(jnp.float32))
    l1 = jnp.mean(error.reshape(b, -1), axis=1)
    weighted = l1 if weight is None else jnp.mean((error * weight.reshape(b * f, *weight.shape[2:])).reshape(b, -1), axis=1)
    kl = jnp.mean(gaussian_kl(mean, logvar).reshape(b, -1), axis=1)
    per_video = weighted + kl_weight * kl
    aux = {"per_video": per_video, "l1": jnp.mean(l1), "kl": jnp.mean(kl), "latent_std": jnp.std(z)}
    return jnp.mean(per_video), aux


def measure_scaling_factor(vae, batches, *, dtype=jnp.float32, seed: int = 0) -> float:
    """1 / std of posterior draws over `batches` (dicts with `frames` (b, f, H, W, 3) in [-1, 1]):
    the factor that gives the diffusion stage unit-variance latents (Stable Diffusion's recipe)."""
    graphdef, state = nnx.split(vae)
    encode = jax.jit(lambda state, x, key: nnx.merge(graphdef, state).encode_sample(x.astype(dtype), key)
                     .astype(jnp.float32))
    total, total_sq, count = 0.0, 0.0, 0
    for i, batch in enumerate(batches):
        frames = np.asarray(batch["frames"])
        z = np.asarray(encode(state, jnp.asarray(frames.reshape(-1, *frames.shape[2:])), jax.random.key(seed + i)),
                       np.float64)
        total, total_sq, count = total + z.sum(), total_sq + np.square(z).sum(), count + z.size
    if count == 0:
        raise ValueError("measure_scaling_factor: no batches")
    variance = total_sq / count - (total / count) ** 2
    return float(1.0 / np.sqrt(variance))
