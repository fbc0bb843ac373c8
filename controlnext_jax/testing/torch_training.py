"""A PyTorch reference of the release's training loss, for parity tests of controlnext_jax.training.

Written from docs/release_semantics.md (Training) with diffusers'
UNetSpatioTemporalConditionModel (control added by our injection hook),
AutoencoderKLTemporalDecoder, transformers' CLIPVisionModelWithProjection and our torch
ControlNeXt module. Every random draw (sigma, latent noise, the VAE posterior draw, the
reference's pixel noise, the dropout r) is an argument, so the JAX loss and this one see
the same numbers; `loss.backward()` gives the reference gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from controlnext_jax.testing.torch_controlnext import hook_control_into_unet
from controlnext_jax.testing.torch_sampler import _clip_embedding


def _nchw(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """channels-last (..., H, W, C) -> torch (..., C, H, W) in `dtype`."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype).movedim(-1, -3)


def release_loss(models: dict, frames: np.ndarray, poses: np.ndarray, *, sigma: np.ndarray, noise: np.ndarray,
                 latent_eps: np.ndarray, image_noise: np.ndarray, dropout_r: np.ndarray, scaling_factor: float,
                 hand_weight: np.ndarray | None = None, dropout_prob: float = 0.1, control_scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The release's loss of one batch, float32. frames (b, f, H, W, 3) in [-1, 1] with the reference
    first; poses (b, f, H, W, 3) in [0, 1]; sigma (b,); noise / latent_eps (b, f, h, w, 4)
    channels-last; image_noise (b, H, W, 3); dropout_r (b,); hand_weight (b, f, H, W) or None.
    `control_scale` multiplies the control's 0.2 (the release's module: 1.0). `dtype` is the dtype
    of the inputs; the models' own dtype must match (float64 gives a rounding-free reference of
    the float32 computations)."""
    unet, vae, image_encoder, controlnext = (models[k] for k in ("unet", "vae", "image_encoder", "controlnext"))
    x = _nchw(frames, dtype)  # (b, f, 3, H, W)
    b, f = x.shape[:2]
    reference = x[:, 0]

    # CLIP on the reference before the noise; VAE mode of the noised reference, unscaled
    embeds = _clip_embedding(image_encoder, reference)  # (b, 1, D)
    cond_latents = vae.encode(reference + 0.02 * _nchw(image_noise, dtype)).latent_dist.mode()  # (b, 4, h, w)

    # targets: posterior draws, times the scaling factor
    dist = vae.encode(x.flatten(0, 1)).latent_dist
    eps = _nchw(latent_eps, dtype).flatten(0, 1)
    latents = ((dist.mean + dist.std * eps) * scaling_factor).unflatten(0, (b, f))  # (b, f, 4, h, w)

    # InstructPix2Pix-style dropout from one r per video
    r = torch.from_numpy(np.asarray(dropout_r, np.float32))  # compared in float32, as drawn
    embeds = torch.where((r < 2 * dropout_prob).view(b, 1, 1), torch.zeros_like(embeds), embeds)
    image_mask = 1 - ((r >= dropout_prob).to(dtype) * (r < 3 * dropout_prob).to(dtype))
    cond_latents = (image_mask.view(b, 1, 1, 1) * cond_latents).unsqueeze(1).repeat(1, f, 1, 1, 1)

    # SVD's preconditioning
    sigmas = torch.from_numpy(np.asarray(sigma, np.float32)).to(dtype)
    s = sigmas.view(b, 1, 1, 1, 1)
    noisy = latents + _nchw(noise, dtype) * s
    timesteps = 0.25 * sigmas.log()
    model_in = torch.cat([noisy / (s ** 2 + 1) ** 0.5, cond_latents], dim=2)
    ids = torch.tensor([[6.0, 127.0, 0.02]], dtype=dtype).repeat(b, 1)

    control = controlnext(_nchw(poses, dtype), timesteps)
    handle = hook_control_into_unet(unet, control, control_scale)
    try:
        v = unet(model_in, timesteps, encoder_hidden_states=embeds, added_time_ids=ids).sample
    finally:
        handle.remove()

    denoised = v * (-s / (s ** 2 + 1) ** 0.5) + noisy / (s ** 2 + 1)
    weighing = (1 + s ** 2) * s ** -2.0
    mask = 1.0
    if hand_weight is not None:
        hw = torch.from_numpy(np.asarray(hand_weight)).to(dtype).flatten(0, 1).unsqueeze(1)  # (b*f, 1, H, W)
        mask = F.adaptive_avg_pool2d(hw, denoised.shape[-2:]).unflatten(0, (b, f))
    per_video = torch.mean((weighing * (denoised - latents) ** 2 * mask).reshape(b, -1), dim=1)
    return per_video.mean()
