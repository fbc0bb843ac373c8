"""The Pose record every detector returns and every later stage consumes.

One frame's people in the DWPose whole-body layout (134 keypoints per person):

    0..17    OpenPose body (nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow,
             l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye,
             r-ear, l-ear)
    18..23   feet (l-big-toe, l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel)
    24..91   face, the 68 points of the 300-W / iBUG layout
    92..112  left hand, 21 points (wrist, then 4 per finger from thumb to little finger)
    113..133 right hand

Coordinates are normalised by the image width (x) and height (y), so a pose can be
drawn at any size. A keypoint the detector did not produce at all (the offline
detector's missing hand, for instance) has NaN coordinates and score 0; DWPose always
produces every point, with its own score.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

NUM_KEYPOINTS = 134
NUM_BODY = 18
BODY = slice(0, NUM_BODY)
FEET = slice(18, 24)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)

NECK = 1
# A body keypoint counts as visible above this score (DWPose's threshold, used by the
# drawing, the neck rule and the alignment).
VISIBLE_SCORE = 0.3

# OpenPose limbs as (joint, joint) pairs of body indices, in the release's drawing order;
# only the first 17 are drawn (the last two, ear-shoulder, never were). Each drawn limb
# is written (parent, child) from the neck outward and every parent appears in an earlier
# limb, so the drawn limbs also serve as the skeleton tree (retargeting walks them in order).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (2, 16), (5, 17),
)
NUM_DRAWN_LIMBS = 17

BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)


@dataclasses.dataclass(frozen=True)
class Pose:
    """People found in one frame.

    keypoints: (num_people, 134, 2) float64, x / width and y / height.
    scores:    (num_people, 134) float64 confidences.
    """

    keypoints: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        kp = np.asarray(self.keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
        sc = np.asarray(self.scores, dtype=np.float64).reshape(-1, NUM_KEYPOINTS)
        if kp.shape[0] != sc.shape[0]:
            raise ValueError(f"keypoints hold {kp.shape[0]} people but scores {sc.shape[0]}")
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "scores", sc)

    @classmethod
    def empty(cls) -> "Pose":
        return cls(np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros((0, NUM_KEYPOINTS)))

    @property
    def num_people(self) -> int:
        return self.keypoints.shape[0]

    def body_visible(self) -> np.ndarray:
        """(num_people, 18) bool: body keypoints DWPose would draw as joints."""
        return self.scores[:, BODY] > VISIBLE_SCORE

    def transformed(self, scale: np.ndarray, offset: np.ndarray) -> "Pose":
        """Every coordinate mapped by x * scale + offset (per axis); scores kept."""
        return Pose(self.keypoints * np.asarray(scale) + np.asarray(offset), self.scores)

    def to_json(self) -> list[dict]:
        """One dict per person; missing points (NaN) become null."""

        def clean(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 6)

        people = []
        for kp, sc in zip(self.keypoints, self.scores):
            people.append({
                "keypoints": [[clean(x), clean(y)] for x, y in kp],
                "scores": [round(float(s), 6) for s in sc],
            })
        return people

    @classmethod
    def from_json(cls, people: list[dict]) -> "Pose":
        if not people:
            return cls.empty()
        kp = np.array([[[np.nan if v is None else v for v in xy] for xy in p["keypoints"]]
                       for p in people], dtype=np.float64)
        sc = np.array([p["scores"] for p in people], dtype=np.float64)
        return cls(kp, sc)
