"""The test-set folder layout and how generated frames line up with ground truth.

    <root>/<clip_id>/reference.png        the image to animate (.png, .jpg, .jpeg or .webp)
    <root>/<clip_id>/driving.mp4          the video whose poses drive the animation
    <root>/<clip_id>/ground_truth.mp4     the target footage, frame-synchronous with driving.mp4
                                          (in TikTok / UBC self-reenactment sets: the same video)
    <root>/<clip_id>/generated.mp4        optional: a video already generated for this clip
    <root>/<clip_id>/driving_poses.npz    optional: the poses the model was given, one row per
                                          generated frame: `keypoints` (F, 18, 2) normalised (x/W,
                                          y/H) and `scores` (F, 18)
    <root>/<clip_id>/figure_mask.npz      optional: `masks` (T, H, W) bool, the person in every
                                          ground-truth frame (figure-region frame metrics)
    <root>/<clip_id>/ground_truth_poses.npz  optional: the true poses of every ground-truth frame
                                          (a renderer's, for synthetic sets): `keypoints` (T, 18, 2)
                                          normalised to the ground-truth frame, `scores` (T, 18),
                                          `reference_keypoints` (18, 2), `reference_scores` (18,),
                                          `size` (H, W); see `read_ground_truth_poses`

Generated videos may instead live in a separate folder as `<generated_dir>/<clip_id>.mp4`.

Frame correspondence (the animate pipeline's, docs/release_semantics.md, Sampling step 1): generated
frame 0 shows the reference pose, generated frame j >= 1 the driving (and ground-truth)
frame offset + (j - 1) * sample_stride, where `offset` is the first driving frame the
pipeline used. With `leading_reference_frame: false` generated frame j matches frame
offset + j * sample_stride. `max_frames` keeps the first that many aligned frames of every
clip (quick runs); every metric sees the clip cut there. Ground-truth frames are brought to
the generated size exactly as the pipeline brings the reference image to the model's size
(`controlnext_jax.pose.video.prepare_reference`: resized to cover, aspect kept, centre-cropped).
Figure masks take the same path (as 0 / 255 images through the same bilinear resize and crop,
then thresholded at half: at the usual 2x reduction the bilinear taps are exactly the 2x2 block
average, so this is area-then-threshold there), and ground-truth poses the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.pose.media import IMAGE_SUFFIXES, decode_frames, probe_video, read_video
from controlnext_jax.pose.types import NUM_BODY
from controlnext_jax.pose.video import cover_size, prepare_reference

FIGURE_MASK = "figure_mask.npz"
GROUND_TRUTH_POSES = "ground_truth_poses.npz"
REFERENCE_NAMES = tuple(f"reference{suffix}" for suffix in IMAGE_SUFFIXES)
REQUIRED = ("driving.mp4", "ground_truth.mp4")


@dataclass(frozen=True)
class ClipFiles:
    clip_id: str
    folder: Path
    generated: Path | None
    reference: Path
    root_param: str = "dataset.root"
    generated_param: str = "dataset.root"

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

    @property
    def figure_mask(self) -> Path | None:
        path = self.folder / FIGURE_MASK
        return path if path.is_file() else None

    @property
    def ground_truth_poses(self) -> Path | None:
        path = self.folder / GROUND_TRUTH_POSES
        return path if path.is_file() else None


def _reference(folder: Path) -> Path | None:
    found = [folder / name for name in REFERENCE_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise UserError(f"dataset.root: clip {folder} has several reference images ({', '.join(p.name for p in found)}); "
                        "keep one")
    return found[0] if found else None


def discover(root: str | Path, generated_dir: str | Path | None = None, max_clips: int = 0) -> list[ClipFiles]:
    """Every `<root>/<clip_id>/` folder, sorted by id, checked for the required files."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset.root={root}: not a folder")
    if generated_dir and not Path(generated_dir).is_dir():
        raise UserError(f"dataset.generated_dir={generated_dir}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"dataset.root={root}: no clip folders (<root>/<clip_id>/reference.png, {', '.join(REQUIRED)})")
    if max_clips < 0:
        raise UserError(f"dataset.max_clips={max_clips}: must be >= 0 (0 = all)")
    clips = []
    for folder in folders[: max_clips or None]:
        reference = _reference(folder)
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        if reference is None:
            missing.insert(0, f"reference image ({'/'.join(REFERENCE_NAMES)})")
        if missing:
            raise UserError(f"dataset.root={root}: clip {folder.name} is missing {', '.join(missing)}")
        generated = (Path(generated_dir) / f"{folder.name}.mp4") if generated_dir else folder / "generated.mp4"
        clips.append(ClipFiles(folder.name, folder, generated if generated.is_file() else None, reference,
                               generated_param="dataset.generated_dir" if generated_dir else "dataset.root"))
    return clips


def cover_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(t, h, w, 3) frames resized to cover height x width and centre-cropped, each exactly
    as the pipeline prepares the reference image; frames already at that size are returned as is."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([prepare_reference(frame, height, width) for frame in frames])


def cover_crop_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(t, h, w) bool masks brought to height x width with the frames' geometry (`cover_crop`):
    resized as 0 / 255 images by the same bilinear resize, cropped alike, thresholded at half."""
    if masks.shape[1:3] == (height, width):
        return masks.astype(bool)
    images = np.where(masks, np.uint8(255), np.uint8(0))[..., None]
    return np.stack([prepare_reference(m, height, width)[..., 0] >= 128 for m in images])


def cover_crop_points(points: np.ndarray, source_hw: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Keypoints normalised to a source frame (x / W, y / H; NaN stays NaN) -> normalised to the
    height x width frame `cover_crop` makes of it (points cropped away fall outside [0, 1])."""
    rh, rw = cover_size(tuple(int(v) for v in source_hw), (height, width))
    top, left = int(round((rh - height) / 2.0)), int(round((rw - width) / 2.0))
    points = np.asarray(points, np.float64)
    x = (points[..., 0] * rw - left) / width
    y = (points[..., 1] * rh - top) / height
    return np.stack([x, y], axis=-1)


@dataclass(frozen=True)
class GroundTruthPoses:
    """A clip's true poses: one row per ground-truth frame, normalised to its size (height, width)."""

    keypoints: np.ndarray  # (T, 18, 2)
    scores: np.ndarray  # (T, 18)
    reference_keypoints: np.ndarray  # (18, 2), the reference image's pose
    reference_scores: np.ndarray  # (18,)
    size: tuple[int, int]


def read_ground_truth_poses(path: str | Path, param: str = "dataset.root") -> GroundTruthPoses:
    """A clip's ground_truth_poses.npz, checked."""
    try:
        with np.load(path) as data:
            fields = {k: np.asarray(data[k]) for k in ("keypoints", "scores", "reference_keypoints",
                                                        "reference_scores", "size")}
    except KeyError as e:
        raise UserError(f"{param}: {path}: missing the array {e}") from None
    kp, sc = fields["keypoints"].astype(np.float64), fields["scores"].astype(np.float64)
    rkp, rsc = fields["reference_keypoints"].astype(np.float64), fields["reference_scores"].astype(np.float64)
    if (kp.ndim != 3 or kp.shape[1:] != (NUM_BODY, 2) or sc.shape != kp.shape[:2] or rkp.shape != (NUM_BODY, 2)
            or rsc.shape != (NUM_BODY,) or fields["size"].shape != (2,)):
        raise UserError(f"{param}: {path}: keypoints must be (T, {NUM_BODY}, 2), scores (T, {NUM_BODY}), "
                        f"reference_keypoints ({NUM_BODY}, 2), reference_scores ({NUM_BODY},), size (2,)")
    return GroundTruthPoses(kp, sc, rkp, rsc, (int(fields["size"][0]), int(fields["size"][1])))


def _read_masks(clip: ClipFiles, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    with np.load(clip.figure_mask) as data:
        if "masks" not in data:
            raise UserError(f"dataset.root: {clip.figure_mask}: no array `masks`")
        masks = data["masks"]
    if masks.ndim != 3 or masks.shape[1:] != size or len(masks) <= indices[-1]:
        raise UserError(f"dataset.root: {clip.figure_mask}: masks must be (T, {size[0]}, {size[1]}) bool with a mask "
                        f"for ground-truth frame {indices[-1]}, got {masks.shape}")
    return masks[indices].astype(bool)


@dataclass(frozen=True)
class Alignment:
    sample_stride: int = 2
    leading_reference_frame: bool = True
    offset: int = 0  # first driving / ground-truth frame the pipeline used
    max_frames: int = 0  # aligned frames kept per clip; 0 = all

    def __post_init__(self):
        for name, value, low in (("sample_stride", self.sample_stride, 1), ("offset", self.offset, 0),
                                 ("max_frames", self.max_frames, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"alignment.{name}={value!r}: must be an integer >= {low}")

    @property
    def first(self) -> int:
        """Index of the first generated frame that has a ground-truth counterpart."""
        return int(self.leading_reference_frame)

    def aligned_count(self, num_generated: int) -> int:
        """Generated frames from `first` on that are evaluated (before the source's end)."""
        n = max(0, num_generated - self.first)
        return min(n, self.max_frames) if self.max_frames else n

    def source_indices(self, num_generated: int, num_source: int) -> np.ndarray:
        """Driving / ground-truth frame index of each evaluated generated frame from `first` on,
        cut where the source video ends."""
        idx = self.offset + np.arange(self.aligned_count(num_generated)) * self.sample_stride
        return idx[idx < num_source]

    def describe(self) -> str:
        text = (f"generated frame {self.first} + j <-> ground-truth frame {self.offset} + j * {self.sample_stride}"
                + (" (generated frame 0 is the reference pose)" if self.first else ""))
        return text + (f"; at most {self.max_frames} aligned frames per clip" if self.max_frames else "")


@dataclass
class AlignedClip:
    """One clip's frames, ready for the metrics. `generated` is the generated video (cut after
    the last evaluated frame when `alignment.max_frames` is set); `generated_aligned[i]` and
    `ground_truth[i]` show the same moment, ground-truth frame `driving_indices[i]`."""

    clip_id: str
    files: ClipFiles
    generated: np.ndarray
    generated_aligned: np.ndarray
    ground_truth: np.ndarray
    driving_indices: np.ndarray
    target_poses: tuple[np.ndarray, np.ndarray] | None  # (keypoints (n, 18, 2) normalised, scores (n, 18))
    figure_masks: np.ndarray | None = None  # (n, h, w) bool at the generated size, from figure_mask.npz
    true_poses: tuple[np.ndarray, np.ndarray] | None = None  # ground_truth_poses.npz rows, generated geometry


def read_generated(clip: ClipFiles, alignment: Alignment) -> np.ndarray:
    """The generated video, read up to the last frame `alignment` evaluates."""
    param = clip.generated_param
    if not alignment.max_frames:
        return read_video(clip.generated, param)
    keep = alignment.first + alignment.max_frames
    frames = decode_frames(clip.generated, param)
    try:
        out = [frame for _, frame in zip(range(keep), frames)]
    finally:
        frames.close()
    if not out:
        raise UserError(f"{param}: {clip.generated}: the video has no frames")
    return np.stack(out)


def _read_ground_truth(clip: ClipFiles, indices: np.ndarray) -> np.ndarray:
    """Only the ground-truth frames at `indices` (increasing), decoding stops after the last."""
    info = probe_video(clip.ground_truth, "dataset.root")
    wanted, out = set(indices.tolist()), []
    frames = decode_frames(clip.ground_truth, "dataset.root", info)
    try:
        for index, frame in enumerate(frames):
            if index in wanted:
                out.append(frame)
                if len(out) == len(wanted):
                    break
    finally:
        frames.close()
    return np.stack(out) if out else np.zeros((0, info.height, info.width, 3), np.uint8)


def align_clip(clip: ClipFiles, generated: np.ndarray, alignment: Alignment) -> AlignedClip:
    """Pair a generated video with its ground truth (and given poses, if the clip has them)."""
    wanted = alignment.source_indices(len(generated), np.iinfo(np.int64).max)
    gt = _read_ground_truth(clip, wanted)
    idx = wanted[: len(gt)]  # cut where the ground truth ends
    if len(idx) == 0:
        raise UserError(f"dataset.root: clip {clip.clip_id}: no generated frame has a ground-truth frame "
                        f"({len(generated)} generated frames; ground truth from frame {alignment.offset} on has none)")
    height, width = generated.shape[1:3]
    generated = generated[: alignment.first + alignment.aligned_count(len(generated))]  # max_frames
    gen_aligned = generated[alignment.first: alignment.first + len(idx)]
    poses = None
    if clip.driving_poses is not None:
        with np.load(clip.driving_poses) as data:
            keypoints, scores = np.asarray(data["keypoints"], np.float64), np.asarray(data["scores"], np.float64)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_BODY, 2) or scores.shape != keypoints.shape[:2]:
            raise UserError(f"dataset.root: {clip.driving_poses}: keypoints must be (F, {NUM_BODY}, 2) and scores "
                            f"(F, {NUM_BODY}), got {keypoints.shape} and {scores.shape}")
        if len(keypoints) < len(generated):
            raise UserError(f"dataset.root: {clip.driving_poses}: {len(keypoints)} poses for {len(generated)} "
                            "generated frames")
        # one row per generated frame, like the pose sequence the model received
        sl = slice(alignment.first, alignment.first + len(idx))
        poses = (keypoints[sl], scores[sl])
    masks = None
    if clip.figure_mask is not None:
        masks = cover_crop_masks(_read_masks(clip, idx, gt.shape[1:3]), height, width)
    true_poses = None
    if clip.ground_truth_poses is not None:
        truth = read_ground_truth_poses(clip.ground_truth_poses)
        if len(truth.keypoints) <= idx[-1]:
            raise UserError(f"dataset.root: {clip.ground_truth_poses}: {len(truth.keypoints)} poses, the evaluation "
                            f"uses ground-truth frame {idx[-1]}")
        true_poses = (cover_crop_points(truth.keypoints[idx], truth.size, height, width), truth.scores[idx])
    return AlignedClip(clip.clip_id, clip, generated, gen_aligned, cover_crop(gt, height, width), idx, poses,
                       masks, true_poses)
