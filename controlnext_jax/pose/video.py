"""From a driving video and a reference image to the pose frames the model sees.

The steps of the release's `pre_process.py` / `dwpose/preprocess.py`, with one
deliberate change: `max_frame_num` and `sample_stride` select the frames *before*
detection (the release detects every sampled frame and truncates afterwards), so
the alignment is fitted on the frames that are used.

1. The reference image is resized to cover (height, width) keeping its aspect (sizes
   rounded up) and centre-cropped; its pose is frame 0 of the sequence.
2. Driving frames 0, stride, 2*stride, ... are read, at most max_frame_num - 1 of them
   (the sequence holds max_frame_num frames with the reference pose first).
3. Each is detected; the poses are aligned to the reference (`align`) and drawn at
   (height, width).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Iterator, Protocol

import numpy as np

from controlnext_jax.atomic_io import atomic_file
from controlnext_jax.endpoint import PARAMETERS
from controlnext_jax.errors import UserError
from controlnext_jax.pose.align import Rescale, fit_rescale, reference_points
from controlnext_jax.pose.media import (  # noqa: F401  load_image, write_video: re-exported, the documented path
    VideoInfo,
    load_image,
    probe_video,
    sampled_frames,
    write_video,
)
from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.retarget import ReferenceSkeleton, retarget
from controlnext_jax.pose.types import Pose

log = logging.getLogger(__name__)

ALIGN_MODES = ("rescale", "retarget", "none")
# The endpoint's parameters that the pose sequence takes (name: (low, high))
LIMITS = {name: PARAMETERS[name][:2] for name in ("max_frame_num", "sample_stride", "height", "width")}


class PoseDetector(Protocol):
    def detect(self, frame: np.ndarray) -> Pose: ...


def check_int(name: str, value) -> int:
    """An endpoint integer parameter, or a clear error naming it and its range."""
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


# -------------------------------------------------------------------- reference image
def cover_size(image_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """Smallest (h, w) with the image's aspect that covers the target (ceil)."""
    h, w = image_hw
    th, tw = target_hw
    ratio = float(h) / float(w)
    if ratio < th / tw:
        return th, math.ceil(th / ratio)
    return math.ceil(tw * ratio), tw


WEIGHT_BITS_LIMIT = 1 << 15  # int16 weights


def _linear_taps(n_in: int, n_out: int):
    """Bilinear taps (half-pixel centres, no antialiasing, source clamped at 0) with
    the weights in fixed point, as torch's uint8 resampling holds them: the most
    precision bits (below 22) for which the largest weight still fits an int16."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    w0 = 1.0 - w1
    edge = i1 == i0  # one tap past the last pixel: its weight is normalised to 1
    w0[edge], w1[edge] = 1.0, 0.0
    w_max = max(w0.max(), w1.max())
    bits = 0
    while bits < 22 and int(0.5 + w_max * (1 << (bits + 1))) < WEIGHT_BITS_LIMIT:
        bits += 1
    fixed = lambda w: np.floor(0.5 + w * (1 << bits)).astype(np.int32)  # noqa: E731
    return i0, i1, fixed(w0), fixed(w1), bits


def resize_bilinear_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's bilinear resize of a uint8 image, bit for bit (what torchvision's resize
    of a uint8 tensor with antialias off runs): a horizontal pass rounded to uint8,
    then a vertical one, each in fixed point with round-half-up."""
    x = image.astype(np.int32)  # 255 * 2 * 2**15 fits: int32 halves the memory of int64
    i0, i1, a, b, bits = _linear_taps(image.shape[1], width)
    x = np.clip((x[:, i0] * a[None, :, None] + x[:, i1] * b[None, :, None]
                 + (1 << (bits - 1))) >> bits, 0, 255)
    i0, i1, a, b, bits = _linear_taps(image.shape[0], height)
    x = np.clip((x[i0] * a[:, None, None] + x[i1] * b[:, None, None]
                 + (1 << (bits - 1))) >> bits, 0, 255)
    return x.astype(np.uint8)


def prepare_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover (height, width), then centre-crop: what the model is given."""
    rh, rw = cover_size(image.shape[:2], (height, width))
    resized = resize_bilinear_u8(image, rh, rw)
    # torchvision's center_crop offsets: round((size - crop) / 2)
    top, left = int(round((rh - height) / 2.0)), int(round((rw - width) / 2.0))
    return np.ascontiguousarray(resized[top:top + height, left:left + width])


# ---------------------------------------------------------------------- the pipeline
@dataclasses.dataclass
class PoseSequence:
    """Frame 0 is the reference pose, then the aligned driving poses."""

    poses: list[Pose]
    height: int
    width: int
    fps: float  # output frame rate: video fps // sample_stride, as the release writes
    align: str
    rescale: Rescale
    video: VideoInfo
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def driving_frames_without_person(self) -> int:
        return sum(p.num_people == 0 for p in self.poses[1:])

    def render(self) -> Iterator[np.ndarray]:
        for pose in self.poses:
            yield draw_pose(pose, self.height, self.width)

    def to_json(self) -> dict:
        return {
            "height": self.height, "width": self.width, "fps": self.fps,
            "align": self.align, "rescale": self.rescale.to_json(),
            "video": dataclasses.asdict(self.video),
            "driving_frames_without_person": self.driving_frames_without_person,
            "warnings": list(self.warnings),
            "layout": "134 keypoints per person: 18 OpenPose body, 6 feet, 68 face, "
                      "21 left hand, 21 right hand; x/width, y/height",
            "frames": [p.to_json() for p in self.poses],
        }


def align_poses(reference: Pose, driving: list[Pose], align: str, video_hw: tuple[int, int],
                target_hw: tuple[int, int]) -> tuple[list[Pose], Rescale]:
    """Driving poses (driving-normalised) -> reference-normalised, by `align`."""
    if align not in ALIGN_MODES:
        raise UserError(f"align must be one of {', '.join(ALIGN_MODES)}; got {align!r}")
    if align == "none":
        return driving, Rescale.identity()
    rescale = fit_rescale(reference, driving, video_hw, target_hw)
    aligned = [rescale.apply(p) for p in driving]
    if align == "retarget":
        skeleton = ReferenceSkeleton.of(reference, target_hw)
        aligned = [retarget(p, skeleton, target_hw) for p in aligned]
    return aligned, rescale


def extract_pose_sequence(detector: PoseDetector, image: np.ndarray, video_path: str, *,
                          height: int = 1024, width: int = 576, max_frame_num: int = 240,
                          sample_stride: int = 2, align: str = "rescale",
                          progress: bool = True, start_frame: int = 0, video_param: str = "video") -> PoseSequence:
    """Reference image (H, W, 3) uint8 RGB, as loaded) + driving video -> PoseSequence.

    Driving frames start_frame, start_frame + stride, ... are used. A video in which
    nobody is found in any used frame is not an error (the pose frames after the
    reference are empty), but it is logged as a warning and listed in `warnings`."""
    height, width = check_int("height", height), check_int("width", width)
    max_frame_num = check_int("max_frame_num", max_frame_num)
    sample_stride = check_int("sample_stride", sample_stride)
    if align not in ALIGN_MODES:
        raise UserError(f"align must be one of {', '.join(ALIGN_MODES)}; got {align!r}")
    if isinstance(start_frame, bool) or not isinstance(start_frame, (int, np.integer)) or start_frame < 0:
        raise UserError(f"start_frame must be an integer >= 0, got {start_frame!r}")
    info = probe_video(video_path, video_param)

    reference_image = prepare_reference(image, height, width)
    reference = detector.detect(reference_image)
    reference_points(reference)  # no person to animate: fail before reading the video

    if hasattr(detector, "reset"):
        detector.reset()  # a tracking detector must not carry the reference over
    limit = max_frame_num - 1
    total = None
    if info.num_frames is not None:
        total = max(0, min(limit, -(-(info.num_frames - start_frame) // sample_stride)))
    frames = sampled_frames(video_path, sample_stride, limit, param=video_param, info=info, start=start_frame)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, desc="pose", unit="frame")
    driving = [detector.detect(frame) for frame in frames]

    aligned, rescale = align_poses(reference, driving, align, (info.height, info.width),
                                   (height, width))
    fps = info.fps // sample_stride if info.fps > 0 else 0.0
    notes = []
    if driving and not any(p.num_people for p in driving):
        notes.append(f"{video_param}={video_path}: nobody was found in any of the {len(driving)} driving frames "
                     "used; the pose frames after the reference pose are empty")
    elif not driving:
        notes.append(f"{video_param}={video_path}: no driving frame was read (start_frame {start_frame}, "
                     f"sample_stride {sample_stride}, max_frame_num {max_frame_num})")
    for note in notes:
        log.warning("%s", note)
    return PoseSequence([reference] + aligned, height, width, float(fps), align, rescale, info, notes)


# ------------------------------------------------------------------------ writing
def write_json(path: str, data: dict, param: str = "keypoints_out") -> None:
    with atomic_file(path, param=param) as tmp, open(tmp, "w") as f:
        json.dump(data, f, allow_nan=False)
