"""Assembling a training clip (docs/release_semantics.md, Training).

The release takes a random frame of the video as the reference and puts it, with its pose,
in slot 0 of the clip; the loss reads the reference from there.
"""

from __future__ import annotations

import numpy as np


def place_reference_first(frames: np.ndarray, poses: np.ndarray, reference: np.ndarray,
                          reference_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames / poses (f, H, W, 3) -> copies whose frame 0 is `reference` / `reference_pose` (H, W, 3)."""
    frames, poses = np.array(frames), np.array(poses)
    frames[0], poses[0] = reference, reference_pose
    return frames, poses
