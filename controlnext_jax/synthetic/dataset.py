"""Synthetic clips and the data set folder that `controlnext-train data=pairs` reads.

`make_clip` draws one identity in one motion: the frames, the pose video drawn by the project's
pose renderer (`controlnext_jax.pose.render.draw_pose`, the drawing the model is conditioned on),
the 18 body keypoints with their visibility, and the figure masks. Everything is a pure function
of (identity_id, motion, seed, frames, height, width, fps), so any identity can be drawn in any
motion as ground truth for evaluation.

`write_dataset` writes a split (docs/synthetic_data.md):

    out/videos/<name>.mp4      the rendered clip (with video_format="npy": <name>.npy, a frame array
    out/poses/<name>.mp4       its pose video, frame i the pose of frame i     that needs no ffmpeg)
    out/keypoints/<name>.json  keypoints (pixels), visibility, and what the clip is
    out/masks/<name>.npz       `masks`: (frames, height, width) bool
    out/dataset.json           the split, its parameters and the list of clips

The pose frames hold the body only: feet, face and hands are left out (NaN coordinates, score 0,
which the pose renderer skips), as for a detector that found no hands or face.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.errors import require_choice, require_int, require_number
from controlnext_jax.pose.media import write_video
from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.types import BODY, NUM_BODY, NUM_KEYPOINTS, Pose
from controlnext_jax.synthetic.identity import make_identity
from controlnext_jax.synthetic.motion import MOTIONS, Track, draw_params, motion_track
from controlnext_jax.synthetic.render import View, camera_path, light_direction, make_background, render_frame
from controlnext_jax.synthetic.skeleton import JOINT, bone_lengths
from controlnext_jax.training.frame_array import write_frame_array

DEFAULT_FPS = 15.0
VIDEO_FORMATS = ("mp4", "npy")  # npy: frame arrays (controlnext_jax/training/frame_array.py), no ffmpeg needed
KEYPOINT_MARGIN = 0.04  # body units kept between the figure's outermost points and the frame edge
_SALT = 0xC11B  # keeps clip streams apart from identity streams


@dataclasses.dataclass(frozen=True)
class Split:
    """Which identities and motion families a split draws from."""

    identities: range
    motions: tuple[str, ...]


# Held out: identities never seen in training, and the whole "jump" family (the only motion with
# both feet off the ground). The held-out split draws every family, so a report can separate
# new people in known motions from the new motion.
SPLITS = {
    "train": Split(identities=range(0, 1000), motions=("walk", "wave", "dance", "turn", "idle_sway")),
    "heldout": Split(identities=range(1_000_000, 1_000_100), motions=MOTIONS),
}


@dataclasses.dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    pose_frames: np.ndarray  # (T, H, W, 3) uint8 RGB, the pose renderer's drawing of `keypoints`
    keypoints: np.ndarray  # (T, 18, 2) float64 pixels (x, y), OpenPose-18 order
    visible: np.ndarray  # (T, 18) bool
    masks: np.ndarray  # (T, H, W) bool, the figure


def body_pose(keypoints: np.ndarray, visible: np.ndarray, height: int, width: int) -> Pose:
    """One frame's 18 body keypoints (pixels) as a one-person `Pose`: coordinates normalised by the
    frame size, score 1 when visible, 0 otherwise; the other 116 points missing (NaN, score 0)."""
    points = np.full((1, NUM_KEYPOINTS, 2), np.nan)
    scores = np.zeros((1, NUM_KEYPOINTS))
    points[0, BODY] = np.asarray(keypoints, np.float64) / np.array([width, height], np.float64)
    scores[0, BODY] = np.asarray(visible, bool).astype(np.float64)
    return Pose(points, scores)


def _extent(track: Track, head_y: float) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) over the clip of the figure's x and y, body units, with a margin."""
    points = np.concatenate([track.joints, track.hand_tips, track.toes,
                             (track.head_center + head_y * track.head_up)[:, None]], 1)
    lo, hi = points[..., :2].reshape(-1, 2).min(0), points[..., :2].reshape(-1, 2).max(0)
    return lo - KEYPOINT_MARGIN, hi + KEYPOINT_MARGIN


def _place(rng, track: Track, head_y: float, stature: float, camera, height: int, width: int) -> tuple[np.ndarray, float]:
    """Scene origin (pixels, where body (0, 0) lands) and scale (pixels per body unit) that keep the
    whole clip inside the frame under every camera position of the clip."""
    lo, hi = _extent(track, head_y)
    centre = np.array([width, height], np.float64) / 2
    # scene points within `safe` of the centre stay in the frame for any zoom <= max_zoom, pan <= max_pan
    safe = (centre - 1.0 - camera.max_pan) / camera.max_zoom
    span = hi - lo
    fit = min(2 * safe[0] / span[0], 2 * safe[1] / span[1])
    scale = fit * rng.uniform(0.7, 1.0) * stature / 1.1
    x_lo, x_hi = centre[0] - safe[0] - scale * lo[0], centre[0] + safe[0] - scale * hi[0]
    y_lo, y_hi = centre[1] - safe[1] + scale * hi[1], centre[1] + safe[1] + scale * lo[1]
    # standing in the lower part of the free room looks like a camera at head height
    origin = np.array([rng.uniform(x_lo, x_hi), rng.uniform(0.5 * (y_lo + y_hi), y_hi)])
    return origin, float(scale)


def _check_size(frames, height, width, fps) -> tuple[int, int, int, float]:
    return (require_int("frames", frames, 1, 100_000), require_int("height", height, 16, 4096),
            require_int("width", width, 16, 4096), require_number("fps", fps, 1.0, 240.0))


def make_clip(identity_id: int, motion_name: str, seed: int, frames: int, height: int, width: int,
              fps: float = DEFAULT_FPS) -> Clip:
    """Identity `identity_id` performing `motion_name`; `seed` draws the motion's variation, the
    placement, the background, the camera path and the light."""
    frames, height, width, fps = _check_size(frames, height, width, fps)
    require_choice("motion", motion_name, MOTIONS)
    require_int("identity", identity_id, 0)
    require_int("seed", seed, 0)
    identity = make_identity(int(identity_id))
    bones = bone_lengths(identity)
    rng = np.random.default_rng([_SALT, int(seed)])
    track = motion_track(motion_name, bones, frames, fps, draw_params(motion_name, rng))
    camera = camera_path(rng, frames, height, width)
    origin, scale = _place(rng, track, bones.head_y, identity.stature, camera, height, width)
    light = light_direction(rng)
    margin = int(np.ceil(camera.max_pan)) + 2
    centre = np.array([width, height], np.float64) / 2
    horizon = origin[1] - rng.uniform(0.05, 0.35) * scale + margin
    background = make_background(rng, height + 2 * margin, width + 2 * margin, horizon)

    out = np.empty((frames, height, width, 3), np.uint8)
    poses = np.empty_like(out)
    masks = np.empty((frames, height, width), bool)
    keypoints = np.empty((frames, NUM_BODY, 2))
    for i in range(frames):
        zoom, pan = float(camera.zoom[i]), camera.pan[i]
        # image = (scene - centre) * zoom + centre + pan; the background has `margin` extra pixels per side
        shift = centre * (1 - zoom) + pan
        matrix = np.array([[zoom, 0.0, shift[0] - zoom * margin], [0.0, zoom, shift[1] - zoom * margin]])
        frame_background = cv2.warpAffine(background, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT)
        view = View(origin=origin * zoom + shift, scale=scale * zoom)
        out[i], masks[i] = render_frame(frame_background, identity, bones, track, i, view, light)
        keypoints[i] = view.project(track.joints[i])
        poses[i] = draw_pose(body_pose(keypoints[i], track.visible[i], height, width), height, width)
    return Clip(frames=out, pose_frames=poses, keypoints=keypoints, visible=track.visible.copy(), masks=masks)


def clip_plan(split: str, num_clips: int, seed: int) -> list[dict]:
    """The clips of a split: name, identity, motion and clip seed of each (motions in turn, so
    every family is equally represented; identities drawn from the split's range)."""
    require_choice("split", split, SPLITS)
    num_clips = require_int("num_clips", num_clips, 1, 1_000_000)
    seed = require_int("seed", seed, 0)
    spec = SPLITS[split]
    rng = np.random.default_rng([_SALT, seed, len(split), sum(map(ord, split))])
    plan = []
    for i in range(num_clips):
        motion = spec.motions[i % len(spec.motions)]
        identity = int(spec.identities[int(rng.integers(len(spec.identities)))])
        clip_seed = int(rng.integers(0, 2**31 - 1))
        plan.append({"name": f"{split}_{i:06d}_id{identity}_{motion}", "identity": identity, "motion": motion,
                     "seed": clip_seed})
    return plan


def write_dataset(out: str | Path, *, split: str, num_clips: int, frames: int, height: int, width: int, seed: int,
                  fps: float = DEFAULT_FPS, video_format: str = "mp4", overwrite: bool = False,
                  progress: bool = False) -> Path:
    """Render a split into the folder `out` (all or nothing); returns its absolute path."""
    frames, height, width, fps = _check_size(frames, height, width, fps)
    require_choice("video_format", video_format, VIDEO_FORMATS)
    plan = clip_plan(split, num_clips, seed)
    overwrite = bool(overwrite)
    out = check_output(out, inputs={}, overwrite=overwrite)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for sub in ("videos", "poses", "keypoints", "masks"):
            (tmp / sub).mkdir()
        for k, entry in enumerate(plan):
            clip = make_clip(entry["identity"], entry["motion"], entry["seed"], frames, height, width, fps)
            name = entry["name"]
            if video_format == "npy":
                write_frame_array(tmp / "videos" / f"{name}.npy", clip.frames)
                write_frame_array(tmp / "poses" / f"{name}.npy", clip.pose_frames)
            else:
                write_video(tmp / "videos" / f"{name}.mp4", clip.frames, fps)
                write_video(tmp / "poses" / f"{name}.mp4", clip.pose_frames, fps)
            record = {**entry, "split": split, "height": height, "width": width, "fps": fps,
                      "joints": [name for name, _ in sorted(JOINT.items(), key=lambda kv: kv[1])],
                      "keypoints": np.round(clip.keypoints, 3).tolist(), "visible": clip.visible.tolist()}
            (tmp / "keypoints" / f"{name}.json").write_text(json.dumps(record))
            np.savez_compressed(tmp / "masks" / f"{name}.npz", masks=clip.masks)
            if progress:
                print(f"[synth] {k + 1}/{len(plan)} {name}", flush=True)
        manifest = {"split": split, "seed": seed, "num_clips": len(plan), "frames": frames, "height": height,
                    "width": width, "fps": fps, "video_format": video_format,
                    "identities": [SPLITS[split].identities.start, SPLITS[split].identities.stop],
                    "motions": list(SPLITS[split].motions), "clips": plan}
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return out


__all__ = ["Clip", "SPLITS", "Split", "body_pose", "clip_plan", "make_clip", "write_dataset"]
