"""One training clip from one record, as the release's data set cuts it (docs/release_semantics.md,
Training, Data).

From the video's exact frame count L: the interval is min(interval_frame, L // n) (shorter
videos get a smaller one; L < n is too short), the window starts uniformly in
0..L - interval * n and takes n frames `interval` apart; the reference is a uniform frame
of the whole video. A crop of the target aspect is drawn (full width or full height, offset
uniform), frames are antialiased-bilinear resized to (height, width) and mapped to [-1, 1],
poses to [0, 1]; frame 0 becomes the reference and its pose (`batch.place_reference_first`).
Hand boxes of the window frames become the loss weight (`hand_mask`), and with
`figure_weight` the figure masks too (`figure_weight`).

A video or pose video may be a frame array (`frame_array`, `.npy`): its length and size are
read from the array's header and only the wanted frames from the memory map, with no ffmpeg.

All randomness comes from the `rng` the caller derives per record, so a clip is a pure
function of (record, rng). Anything wrong with the record's files raises `BadRecord`
naming the file; the loader decides whether to skip it.
"""

from __future__ import annotations

import json
import subprocess
from typing import NamedTuple

import numpy as np
from PIL import Image

from controlnext_jax.errors import UserError
from controlnext_jax.pose.media import decode_frames, ffmpeg_exe, probe_video
from controlnext_jax.training.batch import place_reference_first
from controlnext_jax.training.data_sources import DataConfig, Record
from controlnext_jax.training.figure_weight import figure_weight, read_figure_masks
from controlnext_jax.training.frame_array import is_frame_array, open_frame_array
from controlnext_jax.training.hand_mask import draw_hand_canvas, hand_weight

POSE_LENGTH_TOLERANCE = 25  # the release refuses a pose video whose length differs by 25 frames or more
RANDOM_INTERVALS = (2, 7)  # interval_frame=0: the release draws the interval from 2..7 per clip


class BadRecord(Exception):
    """A record whose file cannot give a clip: `file` and `reason` say which and why."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def count_frames(path: str, param: str) -> int:
    """The exact number of frames of the first video stream (the release's len(VideoReader)):
    the packets counted by an ffmpeg stream copy, which reads the file but decodes nothing."""
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null",
           "-progress", "pipe:1", "-"]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    counts = [line[6:] for line in done.stdout.splitlines() if line.startswith("frame=")]
    if done.returncode != 0 or not counts or not counts[-1].strip().isdigit():
        raise UserError(f"{param}={path}: cannot count its frames: {done.stderr.strip() or 'no count'}")
    return int(counts[-1])


def choose_frames(length: int, n: int, interval_frame: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(window frame indices (n,), reference index) for a video of `length` frames."""
    wanted = interval_frame if interval_frame > 0 else int(rng.integers(RANDOM_INTERVALS[0], RANDOM_INTERVALS[1] + 1))
    interval = min(wanted, length // n)
    if interval < 1:
        raise ValueError(f"has {length} frames, fewer than sample_n_frames={n}")
    start = int(rng.integers(0, length - interval * n + 1))
    reference = int(rng.integers(0, length))
    return start + interval * np.arange(n), reference


def choose_crop(video_hw: tuple[int, int], target_hw: tuple[int, int],
                rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop with the target's aspect: the full width of a
    video taller than the target's aspect, else its full height; the offset uniform."""
    vh, vw = video_hw
    th, tw = target_hw
    if vh / vw > th / tw:
        ch = int(vw * th / tw)
        return int(rng.integers(0, vh - ch + 1)), 0, ch, vw
    cw = int(vh * tw / th)
    return 0, int(rng.integers(0, vw - cw + 1)), vh, cw


def load_clip(record: Record, cfg: DataConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """frames (f, H, W, 3) in [-1, 1], poses (f, H, W, 3) in [0, 1], hand_weight (f, H, W)
    when `cfg.use_hand_weight` and figure_weight (f, H, W) when `cfg.figure_weight`; frame 0 is
    the reference. Raises BadRecord."""
    info, length = _open(record.video, "video")
    pose_info, pose_length = _open(record.pose, "pose")
    if abs(pose_length - length) >= POSE_LENGTH_TOLERANCE:
        raise BadRecord(record.pose, f"the pose video has {pose_length} frames, its video {record.video} "
                                     f"{length} (at most {POSE_LENGTH_TOLERANCE - 1} apart)")
    try:
        ids, reference = choose_frames(length, cfg.sample_n_frames, cfg.interval_frame, rng)
    except ValueError as e:
        raise BadRecord(record.video, f"too short: {e}") from None
    top, left, ch, cw = choose_crop((info.height, info.width), (cfg.height, cfg.width), rng)

    wanted = sorted({*ids.tolist(), reference})
    video = _read_frames(record.video, "video", info, wanted)
    pose = _read_frames(record.pose, "pose", pose_info, wanted)
    # the pose video may be drawn at another size: the same crop, relative to its size
    sy, sx = pose_info.height / info.height, pose_info.width / info.width
    pose_box = (round(top * sy), round(left * sx), max(round(ch * sy), 1), max(round(cw * sx), 1))
    size = (cfg.height, cfg.width)
    frames = _resize([video[i] for i in ids], (top, left, ch, cw), size) * 2.0 - 1.0
    poses = _resize([pose[i] for i in ids], pose_box, size)
    ref = _resize([video[reference]], (top, left, ch, cw), size)[0] * 2.0 - 1.0
    ref_pose = _resize([pose[reference]], pose_box, size)[0]
    frames, poses = place_reference_first(frames, poses, ref, ref_pose)
    clip = {"frames": frames, "poses": poses}
    if cfg.use_hand_weight:
        canvas = _hand_canvas(record.meta, ids, info.height, info.width)
        clip["hand_weight"] = hand_weight(canvas[:, top:top + ch, left:left + cw], size)
    if cfg.figure_weight:
        try:
            masks = read_figure_masks(record.mask, length, info.height, info.width)[ids]
        except (OSError, ValueError) as e:
            raise BadRecord(record.mask, str(e)) from None
        clip["figure_weight"] = figure_weight(masks[:, top:top + ch, left:left + cw], size, cfg.figure_weight)
    return clip


class _ArraySize(NamedTuple):
    """A frame array's frame size (what `load_clip` uses of a video's `VideoInfo`)."""

    height: int
    width: int


def _open(path: str, param: str):
    if is_frame_array(path):
        frames = _open_array(path)
        return _ArraySize(frames.shape[1], frames.shape[2]), frames.shape[0]
    try:
        info = probe_video(path, param)
        return info, count_frames(path, param)
    except UserError as e:
        raise BadRecord(path, str(e).removeprefix(f"{param}={path}: ")) from None


def _read_frames(path: str, param: str, info, wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames at the sorted indices `wanted`: decoded in order up to the last one only
    (video decoding is sequential; nothing after the last wanted frame is decoded)."""
    if is_frame_array(path):
        array = _open_array(path)
        if wanted[-1] >= len(array):
            raise BadRecord(path, f"has {len(array)} frames, frame {wanted[-1]} is needed")
        return {index: np.array(array[index]) for index in wanted}
    keep, frames, count = set(wanted), {}, 0
    stream = decode_frames(path, param, info)
    try:
        for index, frame in enumerate(stream):
            count = index + 1
            if index in keep:
                frames[index] = frame.copy()
            if index >= wanted[-1]:
                break
    except UserError as e:
        raise BadRecord(path, str(e).removeprefix(f"{param}={path}: ")) from None
    finally:
        stream.close()
    if len(frames) < len(keep):
        raise BadRecord(path, f"decoding ended before frame {wanted[-1]} (it has {count} frames)")
    return frames


def _open_array(path: str) -> np.ndarray:
    try:
        return open_frame_array(path)
    except ValueError as e:
        raise BadRecord(path, str(e)) from None


def _resize(frames: list[np.ndarray], box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) frames -> float32 (f, *size, 3) in [0, 1]: cropped to `box`, then
    bilinear with antialiasing on float values (PIL's "F" mode; torchvision's antialiased
    Resize on float tensors follows the same filter, to float rounding)."""
    top, left, ch, cw = box
    out = np.empty((len(frames), *size, 3), np.float32)
    for i, frame in enumerate(frames):
        crop = frame[top:top + ch, left:left + cw].astype(np.float32) / 255.0
        if crop.shape[:2] == size:
            out[i] = crop
            continue
        for c in range(3):
            out[i, ..., c] = np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., c]), mode="F")
                                        .resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out


def _hand_canvas(meta_path: str | None, ids: np.ndarray, height: int, width: int) -> np.ndarray:
    """(f, height, width) canvas of the window frames' hand boxes; zeros without a meta file."""
    if meta_path is None:
        return np.zeros((len(ids), height, width), np.float32)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except OSError as e:
        raise BadRecord(meta_path, f"cannot read the per-frame meta: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRecord(meta_path, f"the per-frame meta is not valid JSON ({e})") from None
    if not isinstance(meta, list) or len(meta) <= int(ids[-1]):
        count = len(meta) if isinstance(meta, list) else "no"
        raise BadRecord(meta_path, f"the per-frame meta has {count} frame entries, frame {int(ids[-1])} is needed")
    boxes, scores = [], []
    try:
        for fid in ids.tolist():
            entry = meta[fid]
            has_hands = isinstance(entry, dict) and "hands_boxes" in entry and "hands_score" in entry
            frame_boxes = entry["hands_boxes"] if has_hands else []
            # the release indexes scores by box, so scores past the boxes are unused
            boxes.append(frame_boxes)
            scores.append(entry["hands_score"][:len(frame_boxes)] if has_hands else [])
        return draw_hand_canvas(boxes, scores, height, width)
    except (TypeError, ValueError, IndexError) as e:
        raise BadRecord(meta_path, f"malformed hands_boxes / hands_score ({e})") from None
