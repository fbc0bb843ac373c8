"""Training clips stored as frame arrays instead of video files.

A frame array is a NumPy `.npy` file holding one clip as uint8 RGB of shape
(frames, height, width, 3), frame i of the clip at index i. It stands wherever the training data
takes a video or a pose video (`videos/<name>.npy` beside `poses/<name>.npy` in the pairs
layout, or the paths of meta_info.json): `controlnext-synth video_format=npy` writes them.

Why: reading one needs neither ffmpeg nor decoding. The file is memory-mapped and only the
frames a clip takes are read, so a loader worker costs almost nothing, and a machine without
an ffmpeg binary (the borrowed GPU machine, docs/embedded_model.md) can train. The price is
disk: 48 frames of 128x96 are 1.8 MB, about 80 times their mp4 (BENCHMARKS.md, Training data).

Loading never unpickles (`allow_pickle=False`): a file holding Python objects is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FRAME_ARRAY_SUFFIX = ".npy"


def is_frame_array(path: str | Path) -> bool:
    return Path(path).suffix.lower() == FRAME_ARRAY_SUFFIX


def open_frame_array(path: str | Path) -> np.ndarray:
    """The clip as a read-only memory map, (frames, height, width, 3) uint8; `ValueError` (one
    line, without the path) when the file cannot be read or holds anything else."""
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as e:
        raise ValueError(f"cannot read it: {e.strerror or e}") from None
    except ValueError as e:  # not a .npy file, or an object array (which would need unpickling)
        raise ValueError(f"not a frame array (.npy of uint8 frames): {e}") from None
    if not isinstance(frames, np.ndarray):
        raise ValueError("not a frame array (.npy of uint8 frames)")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"holds a {frames.dtype} array of shape {frames.shape}; a frame array is uint8 "
                         f"(frames, height, width, 3) with at least one frame")
    return frames


def write_frame_array(path: str | Path, frames) -> None:
    """Save (frames, height, width, 3) uint8 RGB as a frame array."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    np.save(path, np.ascontiguousarray(frames), allow_pickle=False)
