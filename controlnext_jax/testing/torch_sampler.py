"""A PyTorch reference of the ControlNeXt-SVD-v2 release's sampler, for parity tests and benchmarks.

Written from docs/release_semantics.md (Scheduler, Sampling, Known quirks) with diffusers'
UNetSpatioTemporalConditionModel (control added by our injection hook),
AutoencoderKLTemporalDecoder, transformers' CLIPVisionModelWithProjection, our torch
ControlNeXt module and diffusers' EulerDiscreteScheduler with SVD's config. It loops over
the windows one at a time in plain Python, as the release does: the scheduler's step index
reset per window, every window reading the step's starting latents, the first window
adding all its frames and later ones all but their first, CFG off below guidance 1.

`build_random_release` writes small random-weight PyTorch checkpoints and converts them with
our converter, so a JAX pipeline and this reference run the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from controlnext_jax.models.clip_preprocess import CLIP_MEAN, CLIP_STD
from controlnext_jax.sampling.conditioning import ORIGINAL_ADDED_TIME_IDS
from controlnext_jax.testing.torch_controlnext import hook_control_into_unet


def build_random_release(workdir: str | Path, configs: dict, *, seed: int = 0) -> tuple[dict, Path]:
    """Random-weight torch models in the diffusers layout + a ControlNeXt file, converted with
    our converter into `workdir/converted`. Returns (torch models, converted folder)."""
    from controlnext_jax.checkpoint.convert import convert_checkpoint
    from controlnext_jax.testing.torch_checkpoints import torch_models, write_controlnext_file, write_svd_folder

    workdir = Path(workdir)
    models = torch_models(configs, seed=seed)
    write_svd_folder(workdir / "svd", models, configs)
    write_controlnext_file(workdir / "controlnet.bin", models["controlnext"])
    out = workdir / "converted"
    convert_checkpoint(workdir / "svd", workdir / "controlnet.bin", out, controlnext_config=configs["controlnext"],
                       overwrite=True, log=lambda *_: None)
    return models, out


def _to_unit_pixels(frames_u8: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float32 (n, 3, H, W) in [-1, 1], as diffusers' image processor:
    /255 in NumPy, then 2x - 1."""
    x = torch.from_numpy(np.ascontiguousarray(frames_u8).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return 2.0 * x - 1.0


def _clip_embedding(image_encoder, reference: torch.Tensor) -> torch.Tensor:
    """SVD's `_encode_image`: antialiased resize to 224 (stretched), back to [0, 1], CLIP mean/std."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    size = image_encoder.config.image_size
    x = (_resize_with_antialiasing(reference, (size, size)) + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return image_encoder((x - mean) / std).image_embeds.unsqueeze(1)  # (1, 1, D)


@torch.no_grad()
def release_sample(models: dict, scheduler_config: dict, image: np.ndarray, poses: np.ndarray, *,
                   latents: np.ndarray, image_noise: np.ndarray, num_inference_steps: int,
                   min_guidance_scale: float, max_guidance_scale: float, batch_frames: int, overlap: int,
                   decode_chunk_size: int = 2, output_type: str = "latent",
                   added_time_ids: tuple[float, float, float] = ORIGINAL_ADDED_TIME_IDS,
                   control_scale: float | None = None) -> np.ndarray:
    """The release's sampling loop on uint8 `image` (H, W, 3) and `poses` (F, H, W, 3).

    latents: (1, F, h, w, 4) and image_noise (1, H, W, 3) standard normal, channels-last like
    the JAX pipeline's arguments. `added_time_ids` / `control_scale` default to what the
    release uses (fixed ids; the module's scale 1.0, the caller's cond scale ignored);
    passing others gives the endpoint-honouring variant for comparisons.
    Returns the final latents (1, F, h, w, 4) or, with output_type="np", uint8 frames (F, H, W, 3).
    """
    from diffusers import EulerDiscreteScheduler

    unet, vae, image_encoder, controlnext = (models[k] for k in ("unet", "vae", "image_encoder", "controlnext"))
    num_frames = poses.shape[0]
    batch_frames = min(batch_frames, num_frames)
    do_cfg = max_guidance_scale >= 1.0  # the release's test: below 1 the guidance value is ignored

    # 1. CLIP embedding of the reference before the pixel noise; uncond = zeros
    reference = _to_unit_pixels(image[None])  # (1, 3, H, W)
    embeds = _clip_embedding(image_encoder, reference)
    if do_cfg:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])

    # 2. VAE posterior mean of the noised reference (not scaled by scaling_factor); uncond = zeros
    noise = torch.from_numpy(np.ascontiguousarray(image_noise, np.float32)).permute(0, 3, 1, 2)
    image_latents = vae.encode(reference + 0.02 * noise).latent_dist.mode()
    if do_cfg:
        image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
    image_latents = image_latents.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)  # (n, F, 4, h, w)

    # 3. schedule and initial latents
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    latents_all = torch.from_numpy(np.ascontiguousarray(latents, np.float32)).permute(0, 1, 4, 2, 3)
    latents_all = latents_all * scheduler.init_noise_sigma

    # 4. pose frames in [0, 1] via the image processor's [-1, 1]; CFG doubles them
    pose_all = ((_to_unit_pixels(poses) + 1.0) / 2.0).unsqueeze(0)  # (1, F, 3, H, W)
    if do_cfg:
        pose_all = torch.cat([pose_all] * 2)

    guidance = torch.linspace(min_guidance_scale, max_guidance_scale, batch_frames).view(1, batch_frames, 1, 1, 1)
    ids = torch.tensor([list(added_time_ids)], dtype=torch.float32).repeat(2 if do_cfg else 1, 1)

    # 5. steps x windows, one window at a time
    for t in scheduler.timesteps:
        fused = torch.zeros_like(latents_all)
        count = torch.zeros((1, num_frames, 1, 1, 1))
        for start in range(0, num_frames - overlap, batch_frames - overlap):
            scheduler._step_index = None  # the release resets it for every window
            start = min(start, num_frames - batch_frames)
            window = latents_all[:, start:start + batch_frames]
            pose = pose_all[:, start:start + batch_frames].clone()
            pose[:, 0] = pose_all[:, 0]  # every window starts with the reference pose

            model_in = torch.cat([window] * 2) if do_cfg else window
            model_in = scheduler.scale_model_input(model_in, t)
            control = controlnext(pose, t)
            n = control.shape[0]
            base = 1.0 if control_scale is None else float(control_scale)
            if do_cfg:
                scale = torch.full((n,), base).view(n, 1, 1, 1)
                scale[: n // 2] = 0.0  # the uncond half has no control
            else:
                scale = base
            model_in = torch.cat([model_in, image_latents[:, start:start + batch_frames]], dim=2)
            handle = hook_control_into_unet(unet, control, scale)
            try:
                v = unet(model_in, t, encoder_hidden_states=embeds, added_time_ids=ids).sample
            finally:
                handle.remove()
            if do_cfg:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
            stepped = scheduler.step(v, t, window).prev_sample

            if start == 0:
                fused[:, start:start + batch_frames] += stepped
                count[:, start:start + batch_frames] += 1
            else:  # later windows drop their first (reference-pose) frame
                fused[:, start + 1:start + batch_frames] += stepped[:, 1:]
                count[:, start + 1:start + batch_frames] += 1
        latents_all = fused / count

    if output_type == "latent":
        return latents_all.permute(0, 1, 3, 4, 2).numpy()

    # 6. chunked temporal decode, then diffusers' postprocess to uint8
    z = latents_all.flatten(0, 1) / vae.config.scaling_factor
    frames = torch.cat([vae.decode(z[i:i + decode_chunk_size], num_frames=z[i:i + decode_chunk_size].shape[0]).sample
                        for i in range(0, z.shape[0], decode_chunk_size)])
    frames = (frames / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
    return (frames * 255).round().astype(np.uint8)
