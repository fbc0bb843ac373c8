"""`controlnext-eval generate=true`: every clip's video made by the animate pipeline.

The clip's reference image is animated with the poses of its driving video exactly as
`controlnext-animate` does it (the pose package's sequence, then `load_pipeline`), with
the evaluation's own alignment settings (sample_stride, offset) and window settings
(sampling.batch_frames / overlap), so that the report's frame correspondence and seam
positions describe the videos it made. Clip i is generated with seed `seed + i`.

A clip with ground_truth_poses.npz (a synthetic set, docs/embedded_model_eval.md) is driven by
those true poses with `generation.pose_source=auto` (or `ground_truth_poses`): the reference
pose, then the rows of the frames alignment uses, mapped into the generated frame's geometry
and drawn by the pose renderer; no alignment to the reference is applied, as the poses are the
clip's own (self-reenactment), which is how a renderer-trained model saw its poses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from controlnext_jax.errors import UserError, require_choice
from controlnext_jax.metrics.dataset import ClipFiles, cover_crop_points, read_ground_truth_poses

POSE_SOURCES = ("auto", "detector", "ground_truth_poses")


def true_pose_frames(clip: ClipFiles, height: int, width: int, max_frame_num: int, sample_stride: int,
                     offset: int) -> np.ndarray:
    """(n, height, width, 3) pose frames drawn from the clip's ground_truth_poses.npz: the
    reference pose, then ground-truth frames offset, offset + stride, ... (at most max_frame_num
    frames in all), as the pose sequence of `extract_pose_sequence` would lay them out."""
    from controlnext_jax.pose.render import draw_pose
    from controlnext_jax.pose.types import BODY, NUM_KEYPOINTS, Pose

    truth = read_ground_truth_poses(clip.ground_truth_poses, "dataset.root")
    rows = np.arange(offset, len(truth.keypoints), sample_stride)[: max_frame_num - 1]
    keypoints = np.concatenate([truth.reference_keypoints[None], truth.keypoints[rows]])
    scores = np.concatenate([truth.reference_scores[None], truth.scores[rows]])
    keypoints = cover_crop_points(keypoints, truth.size, height, width)
    frames = []
    for kp, sc in zip(keypoints, scores):
        points, point_scores = np.full((1, NUM_KEYPOINTS, 2), np.nan), np.zeros((1, NUM_KEYPOINTS))
        points[0, BODY], point_scores[0, BODY] = kp, sc
        frames.append(draw_pose(Pose(points, point_scores), height, width))
    return np.stack(frames)


def control_weight(cfg: DictConfig) -> float:
    """generation.controlnext_cond_scale, or when null the checkpoint's own
    (`checkpoint.store.trained_control_weight`)."""
    from controlnext_jax.checkpoint.store import trained_control_weight

    if cfg.generation.controlnext_cond_scale is not None:
        return cfg.generation.controlnext_cond_scale
    return trained_control_weight(cfg.ckpt)


def animate_kwargs(cfg: DictConfig) -> dict:
    g = cfg.generation
    return dict(height=g.height, width=g.width, num_inference_steps=g.num_inference_steps,
                guidance_scale=g.guidance_scale, batch_frames=cfg.sampling.batch_frames,
                overlap=cfg.sampling.overlap, motion_bucket_id=g.motion_bucket_id, fps=g.fps,
                controlnext_cond_scale=control_weight(cfg), decode_chunk_size=g.decode_chunk_size,
                fusion=g.fusion, reference_quirks=g.reference_quirks)


def check_generation(cfg: DictConfig) -> None:
    """Everything generation needs, checked before any work (no model is loaded)."""
    from controlnext_jax.pipeline import size_multiple, validate_params
    from controlnext_jax.pose.video import check_int

    if not cfg.ckpt:
        raise UserError("ckpt: required with generate=true (a converted checkpoint folder)")
    require_choice("generation.dtype", cfg.generation.dtype, ("float32", "bfloat16"))
    check_int("max_frame_num", cfg.generation.max_frame_num)
    check_int("sample_stride", cfg.alignment.sample_stride)
    require_choice("generation.pose_source", cfg.generation.get("pose_source", "auto"), POSE_SOURCES)
    if not cfg.alignment.leading_reference_frame:
        raise UserError("alignment.leading_reference_frame=false: the pipeline's videos start with the reference "
                        "pose frame; use true with generate=true")
    # raises UserError naming the parameter
    validate_params(size_multiple=size_multiple(cfg.ckpt), seed=int(cfg.seed), **animate_kwargs(cfg))


def generate_clips(cfg: DictConfig, clips: list[ClipFiles], folder: Path) -> tuple[list[ClipFiles], dict]:
    """Write `folder/<clip_id>.mp4` for every clip; returns the clips pointing at them and, per
    clip, the seed, the control weight used (`control_weight`) and the timings."""
    from controlnext_jax.commands.pose import instantiate_detector
    from controlnext_jax.pipeline import load_pipeline, validate_params
    from controlnext_jax.pose.media import load_image, write_video
    from controlnext_jax.pose.video import extract_pose_sequence, prepare_reference

    g = cfg.generation
    kwargs = animate_kwargs(cfg)
    pipe = load_pipeline(cfg.ckpt, g.dtype, compilation_cache_dir=g.compilation_cache)
    source = g.get("pose_source", "auto")

    def use_true_poses(clip: ClipFiles) -> bool:
        if source == "ground_truth_poses" and clip.ground_truth_poses is None:
            raise UserError(f"generation.pose_source=ground_truth_poses: clip {clip.clip_id} has no "
                            "ground_truth_poses.npz")
        return source != "detector" and clip.ground_truth_poses is not None

    detector = instantiate_detector(cfg.pose)
    made, record = [], {}
    try:
        for i, clip in enumerate(tqdm(clips, desc="generate", unit="clip", disable=not cfg.progress)):
            image = load_image(clip.reference, param="dataset.root")
            if use_true_poses(clip):
                poses = true_pose_frames(clip, g.height, g.width, g.max_frame_num, cfg.alignment.sample_stride,
                                         cfg.alignment.offset)
                pose_source = "ground_truth_poses.npz"
            else:
                seq = extract_pose_sequence(detector, image, str(clip.driving), height=g.height, width=g.width,
                                            max_frame_num=g.max_frame_num, sample_stride=cfg.alignment.sample_stride,
                                            align=cfg.pose_metrics.align, progress=False,
                                            start_frame=cfg.alignment.offset)
                poses = np.stack(list(seq.render()))
                pose_source = f"detector {cfg.pose.get('_target_')}"
            validate_params(num_frames=len(poses), batch_frames=kwargs["batch_frames"], overlap=kwargs["overlap"])
            seed = int(cfg.seed) + i
            frames, timings = pipe.run(prepare_reference(image, g.height, g.width), poses, seed=seed, **kwargs)
            path = folder / f"{clip.clip_id}.mp4"
            write_video(path, frames, g.fps)
            made.append(dataclasses.replace(clip, generated=path, generated_param="generate"))
            record[clip.clip_id] = {"seed": seed, "frames": int(frames.shape[0]), "pose_source": pose_source,
                                    "controlnext_cond_scale": float(kwargs["controlnext_cond_scale"]),
                                    "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    finally:
        if hasattr(detector, "close"):
            detector.close()
    return made, record
