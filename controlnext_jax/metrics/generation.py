"""`controlnext-eval generate=true`: every clip's video made by the animate pipeline.

The clip's reference image is animated with the poses of its driving video exactly as
`controlnext-animate` does it (the pose package's sequence, then `load_pipeline`), with
the evaluation's own alignment settings (sample_stride, offset) and window settings
(sampling.batch_frames / overlap), so that the report's frame correspondence and seam
positions describe the videos it made. Clip i is generated with seed `seed + i`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from controlnext_jax.errors import UserError
from controlnext_jax.metrics.dataset import ClipFiles


def animate_kwargs(cfg: DictConfig) -> dict:
    g = cfg.generation
    return dict(height=g.height, width=g.width, num_inference_steps=g.num_inference_steps,
                guidance_scale=g.guidance_scale, batch_frames=cfg.sampling.batch_frames,
                overlap=cfg.sampling.overlap, motion_bucket_id=g.motion_bucket_id, fps=g.fps,
                controlnext_cond_scale=g.controlnext_cond_scale, decode_chunk_size=g.decode_chunk_size,
                fusion=g.fusion, reference_quirks=g.reference_quirks)


def check_generation(cfg: DictConfig) -> None:
    """Everything generation needs, checked before any work (no model is loaded)."""
    from controlnext_jax.errors import require_choice
    from controlnext_jax.pipeline import size_multiple, validate_params
    from controlnext_jax.pose.video import check_int

    if not cfg.ckpt:
        raise UserError("ckpt: required with generate=true (a converted checkpoint folder)")
    require_choice("generation.dtype", cfg.generation.dtype, ("float32", "bfloat16"))
    check_int("max_frame_num", cfg.generation.max_frame_num)
    check_int("sample_stride", cfg.alignment.sample_stride)
    if not cfg.alignment.leading_reference_frame:
        raise UserError("alignment.leading_reference_frame=false: the pipeline's videos start with the reference "
                        "pose frame; use true with generate=true")
    # raises UserError naming the parameter
    validate_params(size_multiple=size_multiple(cfg.ckpt), seed=int(cfg.seed), **animate_kwargs(cfg))


def generate_clips(cfg: DictConfig, clips: list[ClipFiles], folder: Path) -> tuple[list[ClipFiles], dict]:
    """Write `folder/<clip_id>.mp4` for every clip; returns the clips pointing at them and, per
    clip, the seed and the timings."""
    from controlnext_jax.commands.pose import instantiate_detector
    from controlnext_jax.pipeline import load_pipeline, validate_params
    from controlnext_jax.pose.media import load_image, write_video
    from controlnext_jax.pose.video import extract_pose_sequence, prepare_reference

    g = cfg.generation
    kwargs = animate_kwargs(cfg)
    pipe = load_pipeline(cfg.ckpt, g.dtype, compilation_cache_dir=g.compilation_cache)
    detector = instantiate_detector(cfg.pose)
    made, record = [], {}
    try:
        for i, clip in enumerate(tqdm(clips, desc="generate", unit="clip", disable=not cfg.progress)):
            image = load_image(clip.reference, param="dataset.root")
            seq = extract_pose_sequence(detector, image, str(clip.driving), height=g.height, width=g.width,
                                        max_frame_num=g.max_frame_num, sample_stride=cfg.alignment.sample_stride,
                                        align=cfg.pose_metrics.align, progress=False,
                                        start_frame=cfg.alignment.offset)
            poses = np.stack(list(seq.render()))
            validate_params(num_frames=len(poses), batch_frames=kwargs["batch_frames"], overlap=kwargs["overlap"])
            seed = int(cfg.seed) + i
            frames, timings = pipe.run(prepare_reference(image, g.height, g.width), poses, seed=seed, **kwargs)
            path = folder / f"{clip.clip_id}.mp4"
            write_video(path, frames, g.fps)
            made.append(dataclasses.replace(clip, generated=path, generated_param="generate"))
            record[clip.clip_id] = {"seed": seed, "frames": int(frames.shape[0]),
                                    "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    finally:
        if hasattr(detector, "close"):
            detector.close()
    return made, record
