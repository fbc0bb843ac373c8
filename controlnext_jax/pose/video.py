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
import math
import os
from typing import Iterator, Protocol

import numpy as np

from controlnext_jax.atomic_io import atomic_file
from controlnext_jax.errors import UserError
from controlnext_jax.pose.align import Rescale, fit_rescale, reference_points
from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.retarget import ReferenceSkeleton, retarget
from controlnext_jax.pose.types import Pose

ALIGN_MODES = ("rescale", "retarget", "none")
# The endpoint's parameters (name: (low, high)); REFERENCE.md / seeds.
LIMITS = {
    "max_frame_num": (1, 1000),
    "sample_stride": (1, 10),
    "height": (64, 1024),
    "width": (64, 1024),
}


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
def load_image(path: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise UserError(f"image: file not found: {path!r}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image: cannot read {path!r} as an image ({e})") from e


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


# ------------------------------------------------------------------- driving video
@dataclasses.dataclass(frozen=True)
class VideoInfo:
    height: int
    width: int
    fps: float
    num_frames: int | None  # container's estimate; None when unknown


def probe_video(path: str) -> VideoInfo:
    import imageio.v2 as iio

    if not os.path.isfile(path):
        raise UserError(f"video: file not found: {path!r}")
    try:
        reader = iio.get_reader(path, format="FFMPEG")
    except Exception as e:  # imageio raises several types for unreadable files
        raise UserError(f"video: cannot open {path!r} as a video ({e})") from e
    try:
        meta = reader.get_meta_data()
        w, h = meta["size"]
        fps = float(meta.get("fps") or 0.0)
        n = meta.get("nframes")
        if not (isinstance(n, (int, float)) and math.isfinite(n)):
            # ffmpeg often reports no frame count; duration * fps is a fair estimate
            # (only used for the progress bar).
            duration = meta.get("duration")
            n = round(duration * fps) if duration and fps else None
        return VideoInfo(int(h), int(w), fps, None if n is None else int(n))
    finally:
        reader.close()


def sampled_frames(path: str, sample_stride: int, limit: int) -> Iterator[np.ndarray]:
    """Frames 0, stride, 2*stride, ... of the video, at most `limit` of them.

    Every frame up to the last kept one is decoded (video decoding is sequential),
    but only the kept ones are yielded, and reading stops as soon as `limit` is met.
    """
    import imageio.v2 as iio

    if limit <= 0:
        return
    reader = iio.get_reader(path, format="FFMPEG")
    try:
        kept = 0
        for index, frame in enumerate(reader):
            if index % sample_stride:
                continue
            yield np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
            kept += 1
            if kept >= limit:
                break
    finally:
        reader.close()


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

    def render(self) -> Iterator[np.ndarray]:
        for pose in self.poses:
            yield draw_pose(pose, self.height, self.width)

    def to_json(self) -> dict:
        return {
            "height": self.height, "width": self.width, "fps": self.fps,
            "align": self.align, "rescale": self.rescale.to_json(),
            "video": dataclasses.asdict(self.video),
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
                          progress: bool = True) -> PoseSequence:
    """Reference image (H, W, 3) uint8 RGB, as loaded) + driving video -> PoseSequence."""
    height, width = check_int("height", height), check_int("width", width)
    max_frame_num = check_int("max_frame_num", max_frame_num)
    sample_stride = check_int("sample_stride", sample_stride)
    if align not in ALIGN_MODES:
        raise UserError(f"align must be one of {', '.join(ALIGN_MODES)}; got {align!r}")
    info = probe_video(video_path)

    reference_image = prepare_reference(image, height, width)
    reference = detector.detect(reference_image)
    reference_points(reference)  # no person to animate: fail before reading the video

    if hasattr(detector, "reset"):
        detector.reset()  # a tracking detector must not carry the reference over
    limit = max_frame_num - 1
    total = None
    if info.num_frames is not None:
        total = min(limit, -(-info.num_frames // sample_stride))
    frames = sampled_frames(video_path, sample_stride, limit)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, desc="pose", unit="frame")
    driving = [detector.detect(frame) for frame in frames]

    aligned, rescale = align_poses(reference, driving, align, (info.height, info.width),
                                   (height, width))
    fps = info.fps // sample_stride if info.fps > 0 else 0.0
    return PoseSequence([reference] + aligned, height, width, float(fps), align, rescale, info)


# ------------------------------------------------------------------------ writing
def write_video(path: str, frames, fps: float) -> None:
    """(H, W, 3) uint8 RGB frames -> H.264 mp4 at `path`, all or nothing."""
    with atomic_file(path) as tmp:
        _write_frames(str(tmp), frames, fps)


def _write_frames(tmp: str, frames, fps: float) -> None:
    import imageio.v2 as iio

    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                # 4:2:0 needs even sizes; odd ones keep full chroma instead of being resized.
                pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
                writer = iio.get_writer(tmp, format="FFMPEG", mode="I", fps=max(fps, 1.0),
                                        codec="libx264", macro_block_size=1,
                                        pixelformat=pix, output_params=["-crf", "18"])
            writer.append_data(frame)
        if writer is None:
            raise ValueError("no frames to write")
        writer.close()
        writer = None
    finally:
        if writer is not None:  # already failing: close quietly, the original error matters
            try:
                writer.close()
            except Exception:
                pass


def write_json(path: str, data: dict) -> None:
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, allow_nan=False)
