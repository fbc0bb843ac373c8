"""Least-squares rescale of the driving poses onto the reference person.

The release's alignment (docs/release_semantics.md, "Pose extraction and alignment"): take the body
keypoints [0, 1, 2, 5, 8..17] that are visible in the reference's first person; over
all driving frames with exactly one person, fit y_ref = ay * y + by by least squares
(every such frame's rows, whatever their scores); choose ax so that the map is
isotropic in pixels (ax = ay / (video_h / video_w / height * width)) and bx as the mean
horizontal offset. The same (a, b) then moves every coordinate of every frame.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.pose.types import BODY_NAMES, VISIBLE_SCORE, Pose

log = logging.getLogger(__name__)

ALIGN_BODY_POINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
MIN_REFERENCE_POINTS = 2  # a line through fewer points is not determined


class ReferencePoseError(UserError):
    """The reference image has no person to align to."""


@dataclasses.dataclass(frozen=True)
class Rescale:
    """Normalised driving coords -> normalised reference coords: x * scale + offset."""

    scale: np.ndarray  # (ax, ay)
    offset: np.ndarray  # (bx, by)
    frames_used: int = 0

    @classmethod
    def identity(cls) -> "Rescale":
        return cls(np.ones(2), np.zeros(2), 0)

    def apply(self, pose: Pose) -> Pose:
        return pose.transformed(self.scale, self.offset)

    def to_json(self) -> dict:
        return {"scale": [float(v) for v in self.scale],
                "offset": [float(v) for v in self.offset],
                "frames_used": int(self.frames_used)}


def reference_points(reference: Pose) -> list[int]:
    """Alignment keypoints visible in the reference's first person; a clear error
    when there is no usable person."""
    if reference.num_people == 0:
        raise ReferencePoseError("image: no person found in the reference image; it must show "
                                 "the person to animate")
    ids = [i for i in ALIGN_BODY_POINTS if reference.scores[0, i] > VISIBLE_SCORE]
    if len(ids) < MIN_REFERENCE_POINTS:
        names = ", ".join(BODY_NAMES[i] for i in ALIGN_BODY_POINTS)
        raise ReferencePoseError(
            f"image: no person found in the reference image (only {len(ids)} of the body "
            f"keypoints {names} are visible with score > {VISIBLE_SCORE}; need at least "
            f"{MIN_REFERENCE_POINTS})")
    return ids


def fit_rescale(reference: Pose, driving: Sequence[Pose], video_hw: tuple[int, int],
                target_hw: tuple[int, int]) -> Rescale:
    """Fit the release's rescale; video_hw is the driving frames' (H, W), target_hw
    the (height, width) of the reference image the poses are drawn at."""
    ids = reference_points(reference)
    ref = reference.keypoints[0, ids]  # (K, 2)
    single = [p.keypoints[0, ids] for p in driving if p.num_people == 1]
    if not single:
        several = [p.keypoints[0, ids] for p in driving if p.num_people > 1]
        if not several:  # nothing to align; extract_pose_sequence reports the empty video
            return Rescale.identity()
        # The release would stop here (it fits on single-person frames only); taking
        # each frame's first (most confident) person is the closest useful fit.
        log.warning("no driving frame has exactly one person; aligning on the first "
                    "person of %d multi-person frames", len(several))
        single = several
    drv = np.stack(single)  # (F, K, 2)
    frames = drv.shape[0]
    y_drv, y_ref = drv[:, :, 1].ravel(), np.tile(ref[:, 1], frames)
    if not np.all(np.isfinite(y_drv)) or np.ptp(y_drv) == 0:
        raise UserError("video: the driving body keypoints used for alignment do not span "
                         "any height, so no rescale can be fitted; use align=none")
    ay, by = np.polyfit(y_drv, y_ref, 1)
    video_h, video_w = video_hw
    height, width = target_hw
    ax = ay / (video_h / video_w / height * width)
    bx = np.mean(np.tile(ref[:, 0], frames) - drv[:, :, 0].ravel() * ax)
    return Rescale(np.array([ax, ay]), np.array([bx, by]), frames)
