"""The whole animate computation as one pure function, jitted once per shape set (docs/sampling.md).

reference encodings -> initial noise -> Euler steps over frame windows (CFG, control,
fusion) -> chunked temporal decode. Models arrive as `nnx.split` graph definitions
(closed over) and parameter states (arguments), so the compiled program reads the one
copy of the weights the pipeline holds. Scheduler maths, latents and the fusion
accumulator are float32; the networks run in their own dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.models.controlnext_svd import controlled_v, encode_reference
from controlnext_jax.models.controlnext_svd import dtype_of as _dtype_of
from controlnext_jax.sampling.conditioning import ORIGINAL_ADDED_TIME_IDS
from controlnext_jax.sampling.denoiser import guide, v_prediction_denoiser
from controlnext_jax.sampling.sampler import sample_windows

# The reference's pixel-space noise augmentation (fixed in the release and the endpoint).
NOISE_AUG_STRENGTH = ORIGINAL_ADDED_TIME_IDS[2]


def controlnext_svd_model(unet, controlnext, *, image_embeds, image_latents, poses, added_time_ids,
                          control_scale, guidance, cfg: bool, constrain: Callable, unet_dtype, control_dtype,
                          separate_cfg: bool = False):
    """The v-prediction of a group of windows: ControlNeXt control + SVD UNet, with CFG.

    The CFG batch is [uncond windows..., cond windows...]; the uncond half has a zero CLIP
    embedding, zero image latents and control scale 0 (the release's choice), the cond
    half the reference's. `separate_cfg` (memory saving) runs the two halves as two UNet
    calls, one after the other, instead of one call over the doubled batch.
    Returns model(x_in (W, B, h, w, 4), c_noise, pose_index (W, B))."""

    def model(x_in: jax.Array, c_noise: jax.Array, pose_index: jax.Array) -> jax.Array:
        w, b, h, wd, _ = x_in.shape
        # 1. the pose frames of each window (slot 0 is the reference pose): (W, B, H, W, 3)
        pose = constrain(poses[pose_index])
        control = controlnext(pose.astype(control_dtype), c_noise)  # (W*B, hc, wc, C)
        # 2. the reference latents of every window and slot, and its CLIP context: (W, B, h, w, 4)
        ref = jnp.broadcast_to(image_latents[:, None], (w, b, h, wd, image_latents.shape[-1]))
        context = jnp.broadcast_to(image_embeds[:, None, :], (w, 1, image_embeds.shape[-1]))
        scale = jnp.full((w,), control_scale, jnp.float32)
        if cfg and separate_cfg:
            # a lax.map over the two halves is a loop: one half's activations exist at a time
            # (docs/sampling.md, Memory saving)
            def half(args):
                half_ref, half_context, half_scale = args
                return controlled_v(unet, x_in, half_ref, c_noise, half_context, added_time_ids, control,
                                    half_scale, unet_dtype=unet_dtype, constrain=constrain)

            halves = (jnp.stack([jnp.zeros_like(ref), ref]), jnp.stack([jnp.zeros_like(context), context]),
                      jnp.stack([jnp.zeros_like(scale), scale]))
            v_uncond, v_cond = jax.lax.map(half, halves)
            return guide(v_uncond, v_cond, guidance)
        if cfg:
            x_in = jnp.concatenate([x_in, x_in])  # (2W, B, h, w, 4)
            ref = jnp.concatenate([jnp.zeros_like(ref), ref])
            context = jnp.concatenate([jnp.zeros_like(context), context])
            # the uncond half's control is multiplied by 0, so reusing the cond control is exact
            control = jnp.concatenate([control, control])
            scale = jnp.concatenate([jnp.zeros_like(scale), scale])
        # 3. one UNet call over the stacked batch, split over the devices
        v = controlled_v(unet, x_in, ref, c_noise, context, added_time_ids, control, scale,
                         unet_dtype=unet_dtype, constrain=constrain)
        return guide(v[:w], v[w:], guidance) if cfg else v

    return model


def decode_latents(vae, latents: jax.Array, chunk: int, scaling_factor: float, *, devices: int = 1,
                   constrain: Callable = lambda x: x) -> jax.Array:
    """(F, h, w, 4) latents -> (F, H, W, 3) uint8, `chunk` frames per temporal-decoder call
    (the decoder mixes frames inside a chunk only); the last chunk may be shorter.

    devices > 1 (a mesh's size, with `constrain` splitting a leading axis over it): the full
    chunks are decoded `devices` at a time, one per device, instead of every device decoding
    every chunk of its replicated latents; zero chunks pad the last group (their frames are
    dropped). The shorter last chunk is still decoded on every device."""
    vae_dtype = _dtype_of(nnx.state(vae))
    z = (latents / scaling_factor).astype(vae_dtype)
    f = z.shape[0]
    full, rest = divmod(f, chunk)
    parts = []
    if full:
        groups = -(-full // devices)
        chunks = z[:full * chunk]
        if groups * devices > full:
            chunks = jnp.concatenate([chunks, jnp.zeros(((groups * devices - full) * chunk, *z.shape[1:]), z.dtype)])
        # (groups, devices * chunk, h, w, 4): one group per decoder call, a chunk per device
        grouped = chunks.reshape(groups, devices * chunk, *z.shape[1:])
        out = jax.lax.map(lambda g: vae.decode(constrain(g), chunk).astype(jnp.float32), grouped)
        parts.append(out.reshape(groups * devices * chunk, *out.shape[2:])[:full * chunk])
    if rest:
        parts.append(vae.decode(z[full * chunk:], rest).astype(jnp.float32))
    frames = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
    # diffusers' postprocess: [-1, 1] -> [0, 1], clamp, * 255, round half to even
    return jnp.round(jnp.clip(frames / 2.0 + 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def run_program(graphdefs: dict, constrain: Callable, params: dict, inputs: dict, *, cfg: bool,
                output_type: str, decode_chunk_size: int, scaling_factor: float, separate_cfg: bool = False,
                on_window_group: Callable | None = None, devices: int = 1) -> jax.Array:
    """inputs: reference (1, H, W, 3) f32 in [-1, 1]; image_noise (1, H, W, 3); noise (F, h, w, 4)
    standard normal; poses (F, H, W, 3) uint8; sigmas (S+1,), c_noise (S,), init_sigma ();
    added_time_ids (3,); control_scale (); guidance (B,); plan arrays (see WindowPlan.arrays).
    separate_cfg: the CFG halves as two UNet calls (memory saving).
    devices: the size of the mesh `constrain` splits over (1: no mesh), for the decode.
    on_window_group(step, group): a host function told when a window group is done (progress).
    Returns latents (F, h, w, 4) f32 or frames (F, H, W, 3) uint8."""
    unet, vae, clip, controlnext = (nnx.merge(graphdefs[n], params[n])
                                    for n in ("unet", "vae", "image_encoder", "controlnext"))
    reference = inputs["reference"]

    # 1-2. CLIP embedding of the reference before the noise augmentation (1, D); VAE posterior
    # mean of the noised reference, not scaled by scaling_factor (1, h, w, 4)
    image_embeds, image_latents = encode_reference(
        clip, vae, reference, inputs["image_noise"], NOISE_AUG_STRENGTH,
        clip_dtype=_dtype_of(params["image_encoder"]), vae_dtype=_dtype_of(params["vae"]))

    # 3. pose frames as the release feeds them: uint8 -> [0, 1] -> [-1, 1] -> [0, 1]
    poses = (inputs["poses"].astype(jnp.float32) / 255.0 * 2.0 - 1.0 + 1.0) / 2.0

    # 4. windowed Euler sampling from noise * init_sigma
    model = controlnext_svd_model(
        unet, controlnext, image_embeds=image_embeds, image_latents=image_latents, poses=poses,
        added_time_ids=inputs["added_time_ids"], control_scale=inputs["control_scale"],
        guidance=inputs["guidance"], cfg=cfg, constrain=constrain, unet_dtype=_dtype_of(params["unet"]),
        control_dtype=_dtype_of(params["controlnext"]), separate_cfg=separate_cfg)
    plan = inputs["plan"]
    latents = inputs["noise"].astype(jnp.float32) * inputs["init_sigma"]
    latents = sample_windows(v_prediction_denoiser(model), latents, inputs["sigmas"], inputs["c_noise"],
                             plan, plan["pose_index"], on_window_group=on_window_group)
    if output_type == "latent":
        return latents

    # 5. chunked temporal decode to uint8 frames, the chunks spread over the devices
    return decode_latents(vae, latents, decode_chunk_size, scaling_factor, devices=devices, constrain=constrain)
