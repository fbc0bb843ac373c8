"""The OpenPose-18 skeleton of a synthetic figure and its bone lengths.

Joint order, names and limbs are the project's (`controlnext_jax.pose.types`: BODY_NAMES,
LIMBS), so the keypoints of a clip are exactly what the pose renderer draws. Lengths are in
body units: an average figure standing upright is 1.0 from the ground to the top of its head.
"""

from __future__ import annotations

import dataclasses

from controlnext_jax.pose.types import BODY_NAMES, LIMBS, NUM_BODY, NUM_DRAWN_LIMBS
from controlnext_jax.synthetic.identity import Identity

__all__ = ["BODY_NAMES", "LIMBS", "NUM_BODY", "NUM_DRAWN_LIMBS", "JOINT", "BoneLengths", "AVERAGE_BONES",
           "bone_lengths", "FACE_JOINTS"]

JOINT = {name: i for i, name in enumerate(BODY_NAMES)}  # "left_knee" -> 12
FACE_JOINTS = tuple(JOINT[n] for n in ("nose", "right_eye", "left_eye", "right_ear", "left_ear"))


@dataclasses.dataclass(frozen=True)
class BoneLengths:
    """Segment lengths and half-widths in body units (see the module docstring)."""

    shin: float = 0.245  # knee to ankle
    thigh: float = 0.245  # hip to knee
    ankle_height: float = 0.045  # ankle above the ground
    foot: float = 0.09  # ankle to toe
    hip_half: float = 0.06  # pelvis centre to each hip joint
    torso: float = 0.28  # pelvis centre to neck
    shoulder_half: float = 0.105  # neck to each shoulder
    upper_arm: float = 0.165
    forearm: float = 0.145
    hand: float = 0.075
    neck: float = 0.105  # neck keypoint to the head's centre
    head_x: float = 0.07  # head half-width (ear to ear)
    head_y: float = 0.08  # head half-height (chin to crown)
    head_z: float = 0.085  # head half-depth (nose to back)

    @property
    def hip_height(self) -> float:
        return self.ankle_height + self.shin + self.thigh


AVERAGE_BONES = BoneLengths()


def bone_lengths(identity: Identity) -> BoneLengths:
    """The identity's bones: the average body scaled by its proportions."""
    p, a = identity.proportions, AVERAGE_BONES
    return BoneLengths(
        shin=a.shin * p.legs, thigh=a.thigh * p.legs, ankle_height=a.ankle_height, foot=a.foot * p.legs,
        hip_half=a.hip_half * p.hips, torso=a.torso * p.torso, shoulder_half=a.shoulder_half * p.shoulders,
        upper_arm=a.upper_arm * p.arms, forearm=a.forearm * p.arms, hand=a.hand * p.arms,
        neck=a.neck * p.head, head_x=a.head_x * p.head, head_y=a.head_y * p.head, head_z=a.head_z * p.head)
