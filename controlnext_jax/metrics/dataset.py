"""The benchmark folder layout and how generated frames line up with ground truth.

    <root>/<clip_id>/reference.png        the image to animate
    <root>/<clip_id>/driving.mp4          the video whose poses drive the animation
    <root>/<clip_id>/ground_truth.mp4     the target footage, frame-synchronous with driving.mp4
                                          (in TikTok / UBC self-reenactment sets: the same video)
    <root>/<clip_id>/generated.mp4        optional: a video already generated for this clip
    <root>/<clip_id>/driving_poses.npz    optional: the poses the model was given, one row per
                                          generated frame: `keypoints` (F, 18, 2) normalised (x/W,
                                          y/H) and `scores` (F, 18)

Generated videos may instead live in a separate folder as `<generated_dir>/<clip_id>.mp4`.

Frame correspondence (the animate pipeline's, REFERENCE.md Sampling step 1): generated
frame 0 shows the reference pose, generated frame j >= 1 the driving (and ground-truth)
frame (j - 1) * sample_stride. With `leading_reference_frame: false` generated frame j
matches frame j * sample_stride. Ground-truth frames are brought to the generated size the
way the pipeline treats the reference: resized to cover (aspect kept), centre-cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from controlnext_jax.errors import UserError

REQUIRED = ("reference.png", "driving.mp4", "ground_truth.mp4")


@dataclass(frozen=True)
class ClipFiles:
    clip_id: str
    folder: Path
    generated: Path | None

    @property
    def reference(self) -> Path:
        return self.folder / "reference.png"

    @property
    def driving(self) -> Path:
        return self.folder / "driving.mp4"

    @property
    def ground_truth(self) -> Path:
        return self.folder / "ground_truth.mp4"

    @property
    def driving_poses(self) -> Path | None:
        path = self.folder / "driving_poses.npz"
        return path if path.is_file() else None


def discover(root: str | Path, generated_dir: str | Path | None = None, max_clips: int = 0) -> list[ClipFiles]:
    """Every `<root>/<clip_id>/` folder, sorted by id, checked for the required files."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset.root={root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"dataset.root={root}: no clip folders (<root>/<clip_id>/{', '.join(REQUIRED)})")
    if max_clips < 0:
        raise UserError(f"dataset.max_clips={max_clips}: must be >= 0 (0 = all)")
    clips = []
    for folder in folders[: max_clips or None]:
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        if missing:
            raise UserError(f"clip {folder}: missing {', '.join(missing)}")
        generated = (Path(generated_dir) / f"{folder.name}.mp4") if generated_dir else folder / "generated.mp4"
        clips.append(ClipFiles(folder.name, folder, generated if generated.is_file() else None))
    return clips


def read_video(path: Path) -> np.ndarray:
    """(t, h, w, 3) uint8 frames of a video file."""
    frames = np.asarray(iio.imread(path, plugin="FFMPEG"))
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise UserError(f"{path}: expected an RGB video, got frames of shape {frames.shape}")
    return frames


def cover_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (t, h, w, 3) frames to cover height x width keeping the aspect (bilinear,
    size rounded up), then centre-crop; frames already at that size are returned as is."""
    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_h, new_w = max(height, int(np.ceil(h * scale))), max(width, int(np.ceil(w * scale)))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    out = np.empty((t, height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR))
        out[i] = resized[top: top + height, left: left + width]
    return out


@dataclass(frozen=True)
class Alignment:
    sample_stride: int = 2
    leading_reference_frame: bool = True

    def __post_init__(self):
        if self.sample_stride < 1:
            raise UserError(f"alignment.sample_stride={self.sample_stride}: must be >= 1")

    @property
    def first(self) -> int:
        """Index of the first generated frame that has a ground-truth counterpart."""
        return int(self.leading_reference_frame)

    def source_indices(self, num_generated: int, num_source: int) -> np.ndarray:
        """Driving / ground-truth frame index of each generated frame from `first` on,
        cut where the source video ends."""
        idx = np.arange(num_generated - self.first) * self.sample_stride
        return idx[idx < num_source]


@dataclass
class AlignedClip:
    """One clip's frames, ready for the metrics. `generated` is the whole generated video;
    `generated_aligned[i]` and `ground_truth[i]` show the same moment."""

    clip_id: str
    files: ClipFiles
    generated: np.ndarray
    generated_aligned: np.ndarray
    ground_truth: np.ndarray
    driving_indices: np.ndarray
    target_poses: tuple[np.ndarray, np.ndarray] | None  # (keypoints (n, 18, 2) normalised, scores (n, 18))


def align_clip(clip: ClipFiles, generated: np.ndarray, alignment: Alignment) -> AlignedClip:
    """Pair a generated video with its ground truth (and given poses, if the clip has them)."""
    gt = read_video(clip.ground_truth)
    idx = alignment.source_indices(len(generated), len(gt))
    if len(idx) == 0:
        raise UserError(f"clip {clip.clip_id}: no generated frame has a ground-truth frame "
                         f"({len(generated)} generated, {len(gt)} ground truth)")
    height, width = generated.shape[1:3]
    gen_aligned = generated[alignment.first: alignment.first + len(idx)]
    poses = None
    if clip.driving_poses is not None:
        with np.load(clip.driving_poses) as data:
            keypoints, scores = np.asarray(data["keypoints"], np.float64), np.asarray(data["scores"], np.float64)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (18, 2) or scores.shape != keypoints.shape[:2]:
            raise UserError(f"{clip.driving_poses}: keypoints must be (F, 18, 2) and scores (F, 18), "
                             f"got {keypoints.shape} and {scores.shape}")
        if len(keypoints) < len(generated):
            raise UserError(f"{clip.driving_poses}: {len(keypoints)} poses for {len(generated)} generated frames")
        # one row per generated frame, like the pose sequence the model received
        sl = slice(alignment.first, alignment.first + len(idx))
        poses = (keypoints[sl], scores[sl])
    return AlignedClip(clip.clip_id, clip, generated, gen_aligned, cover_crop(gt[idx], height, width), idx, poses)
