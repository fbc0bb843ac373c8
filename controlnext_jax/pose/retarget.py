"""Per-limb retargeting: the driving motion on the reference person's proportions.

The release's alignment is one global scale and offset, so a short reference driven
by a tall dancer gets the dancer's long legs. Retargeting (as MusePose's and
UniAnimate's pose alignment do) rebuilds each frame's skeleton from the neck outward:
every bone keeps the driving frame's direction and takes the reference's length.

The driving poses must already be in the reference's normalised coordinates (run the
least-squares rescale first): the neck stays where that put it, and lengths and
angles are measured in output pixels so that non-square outputs keep their angles.
Bones are the 17 drawn OpenPose limbs, which form a tree rooted at the neck.

Lengths seen in an image are projections. A bone pointing at the camera looks short,
and setting it to the other pose's length would be wrong in both directions: a
foreshortened driving forearm would be stretched sideways to full length, and a
foreshortened reference forearm would shrink every driving forearm (and the hands that
scale with it). So each bone is first judged in each pose against what the pose's own
torso predicts: the body scale is the largest of the torso bones (neck-shoulders,
neck-hips) divided by their typical share (`TYPICAL_LENGTH`, in neck-hip units;
foreshortening only ever shortens, so the largest estimate is the least foreshortened),
and a bone's *fullness* is its length over scale x its typical share. With the lower
fullness of the two poses f, the bone's new length is
    driving + w * (reference - driving),  w = clip((f - FORESHORTENED) / (FULL - FORESHORTENED), 0, 1)
i.e. the rescaled driving bone below FORESHORTENED, the reference length from FULL on,
blended in between so that a bone turning towards the camera does not jump. A pose
without a visible torso bone has no scale and its bones are not judged. A bone whose
ends are not both visible (score > 0.3) in the driving frame, or in the reference,
keeps its (rescaled) driving vector.

Hands follow their wrist and scale with their forearm's length ratio, the face follows
the nose and scales with the head bone (neck-nose), feet follow their ankle and scale
with the shin; every such factor is clipped to [1 / MAX_PART_SCALE, MAX_PART_SCALE], so
a hand or the face is never more than that much bigger or smaller than the rescale
alone would draw it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from controlnext_jax.pose.types import (
    FACE,
    LEFT_HAND,
    LIMBS,
    NECK,
    NUM_DRAWN_LIMBS,
    RIGHT_HAND,
    VISIBLE_SCORE,
    Pose,
)

# (parent, child), parents always placed before their children: the drawn limbs.
BONES = LIMBS[:NUM_DRAWN_LIMBS]
# Parts carried along with a body joint, scaled with a bone (parent, joint).
ATTACHED = (
    (LEFT_HAND, (6, 7)),
    (RIGHT_HAND, (3, 4)),
    (FACE, (NECK, 0)),
    (slice(18, 21), (12, 13)),  # left foot follows the left ankle
    (slice(21, 24), (9, 10)),  # right foot
)
# Typical image length of each bone of a person facing the camera, in units of the
# neck-hip distance: medians over the frames of a dance video (MediaPipe), rounded,
# in line with the usual anthropometric tables (forearm ~0.15, neck-hip ~0.3 of height).
TYPICAL_LENGTH = {
    (1, 2): 0.33, (2, 3): 0.57, (3, 4): 0.52,
    (1, 5): 0.33, (5, 6): 0.57, (6, 7): 0.52,
    (1, 8): 1.0, (8, 9): 0.8, (9, 10): 0.78,
    (1, 11): 1.0, (11, 12): 0.8, (12, 13): 0.78,
    (1, 0): 0.41, (0, 14): 0.1, (14, 16): 0.08, (0, 15): 0.1, (15, 17): 0.08,
}
TORSO_BONES = ((1, 2), (1, 5), (1, 8), (1, 11))
# Fullness (length / what the torso predicts) below which a bone counts as foreshortened
# and keeps its driving length, and from which it takes the reference length in full.
# Real dance frames stay above 0.6 but for arms pointing at the camera (a 39 px forearm
# on a 340 px torso is 0.2); a reference with hands clasped in front has forearms near 0.45.
FORESHORTENED = 0.45
FULL = 0.6
MAX_PART_SCALE = 1.5


def _pixels(keypoints: np.ndarray, target_hw: tuple[int, int]) -> np.ndarray:
    height, width = target_hw
    return keypoints * np.array([width, height], dtype=np.float64)


def _lengths(pix: np.ndarray, visible: np.ndarray) -> dict:
    """Bone -> length for the bones whose two ends are visible."""
    return {bone: float(np.linalg.norm(pix[bone[1]] - pix[bone[0]]))
            for bone in BONES if visible[bone[0]] and visible[bone[1]]}


def body_scale(lengths: dict) -> float | None:
    """The neck-hip distance the least foreshortened visible torso bone predicts."""
    estimates = [lengths[b] / TYPICAL_LENGTH[b] for b in TORSO_BONES if b in lengths]
    return max(estimates) if estimates and max(estimates) > 0 else None


def fullness(lengths: dict) -> dict:
    """Bone -> length / (body scale x typical share); 1 and up is a bone seen at full
    length, small values a bone pointing at or away from the camera. Empty without a
    torso bone to take the scale from."""
    scale = body_scale(lengths)
    if scale is None:
        return {}
    return {b: length / (scale * TYPICAL_LENGTH[b]) for b, length in lengths.items()}


@dataclasses.dataclass(frozen=True)
class ReferenceSkeleton:
    """The reference's first person: bone lengths in output pixels and their fullness."""

    lengths: dict
    fullness: dict

    @classmethod
    def of(cls, reference: Pose, target_hw: tuple[int, int]) -> "ReferenceSkeleton":
        if reference.num_people == 0:
            return cls({}, {})
        lengths = _lengths(_pixels(reference.keypoints[0], target_hw), reference.scores[0] > VISIBLE_SCORE)
        return cls(lengths, fullness(lengths))


def reference_bone_lengths(reference: Pose, target_hw: tuple[int, int]) -> dict:
    """Bone -> length in output pixels, for the bones visible in the first person."""
    return ReferenceSkeleton.of(reference, target_hw).lengths


def retarget_weight(driving_fullness: float | None, reference_fullness: float | None) -> float:
    """How much of the reference length a bone takes (0: keeps its driving length)."""
    known = [f for f in (driving_fullness, reference_fullness) if f is not None]
    if not known:
        return 1.0
    return float(np.clip((min(known) - FORESHORTENED) / (FULL - FORESHORTENED), 0.0, 1.0))


def retarget_person(keypoints: np.ndarray, scores: np.ndarray, reference: ReferenceSkeleton,
                    target_hw: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """(134, 2) normalised keypoints of one person -> retargeted (134, 2), and each
    bone's weight (1: reference length, 0: driving length kept)."""
    old = _pixels(keypoints, target_hw)
    new = old.copy()
    vis = scores > VISIBLE_SCORE
    lengths = _lengths(old, vis)
    driving_fullness = fullness(lengths)
    ratio, weights = {}, {}
    for bone in BONES:
        parent, child = bone
        vec = old[child] - old[parent]
        norm = lengths.get(bone, 0.0)
        if bone in reference.lengths and norm > 0:
            w = retarget_weight(driving_fullness.get(bone), reference.fullness.get(bone))
            length = norm + w * (reference.lengths[bone] - norm)
            new[child] = new[parent] + vec / norm * length
            ratio[bone], weights[bone] = length / norm, w
        else:
            new[child] = new[parent] + vec
    for part, bone in ATTACHED:
        scale = float(np.clip(ratio.get(bone, 1.0), 1.0 / MAX_PART_SCALE, MAX_PART_SCALE))
        joint = bone[1]
        new[part] = new[joint] + (old[part] - old[joint]) * scale
    return new / _pixels(np.ones(2), target_hw), weights


def retarget(pose: Pose, reference: Pose | ReferenceSkeleton, target_hw: tuple[int, int]) -> Pose:
    """Every person of `pose` rebuilt on the reference's first person's bone lengths
    (`reference` as a Pose, or its `ReferenceSkeleton` computed once for a video)."""
    if isinstance(reference, Pose):
        reference = ReferenceSkeleton.of(reference, target_hw)
    if pose.num_people == 0:
        return pose
    kp = np.stack([retarget_person(k, s, reference, target_hw)[0] for k, s in zip(pose.keypoints, pose.scores)])
    return Pose(kp, pose.scores)
