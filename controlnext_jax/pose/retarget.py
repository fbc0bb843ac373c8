"""Per-limb retargeting: the driving motion on the reference person's proportions.

The release's alignment is one global scale and offset, so a short reference driven
by a tall dancer gets the dancer's long legs. Retargeting (as MusePose's and
UniAnimate's pose alignment do) rebuilds each frame's skeleton from the neck outward:
every bone keeps the driving frame's direction and takes the reference's length.

The driving poses must already be in the reference's normalised coordinates (run the
least-squares rescale first): the neck stays where that put it, and lengths and
angles are measured in output pixels so that non-square outputs keep their angles.
Bones are the 17 drawn OpenPose limbs, which form a tree rooted at the neck.
A bone whose ends are not both visible (score > 0.3) in the driving frame, or in the
reference, keeps its (rescaled) driving vector. Hands follow their wrist and are
scaled with their forearm, the face follows the nose and scales with the head bone
(neck-nose), feet follow their ankle.
"""

from __future__ import annotations

import numpy as np

from controlnext_jax.pose.types import FACE, LEFT_HAND, NECK, RIGHT_HAND, VISIBLE_SCORE, Pose

# (parent, child), parents always placed before their children.
BONES = (
    (1, 2), (2, 3), (3, 4),  # neck -> right shoulder -> elbow -> wrist
    (1, 5), (5, 6), (6, 7),  # left arm
    (1, 8), (8, 9), (9, 10),  # right leg
    (1, 11), (11, 12), (12, 13),  # left leg
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),  # head
)
# Parts carried along with a body joint, scaled with a bone (parent, joint).
ATTACHED = (
    (LEFT_HAND, (6, 7)),
    (RIGHT_HAND, (3, 4)),
    (FACE, (NECK, 0)),
    (slice(18, 21), (12, 13)),  # left foot follows the left ankle
    (slice(21, 24), (9, 10)),  # right foot
)


def reference_bone_lengths(reference: Pose, target_hw: tuple[int, int]) -> dict:
    """Bone -> length in output pixels, for the bones visible in the first person."""
    if reference.num_people == 0:
        return {}
    height, width = target_hw
    pix = reference.keypoints[0] * np.array([width, height], dtype=np.float64)
    vis = reference.scores[0] > VISIBLE_SCORE
    return {bone: float(np.linalg.norm(pix[bone[1]] - pix[bone[0]]))
            for bone in BONES if vis[bone[0]] and vis[bone[1]]}


def retarget_person(keypoints: np.ndarray, scores: np.ndarray, ref_lengths: dict,
                    target_hw: tuple[int, int]) -> np.ndarray:
    """(134, 2) normalised keypoints of one person -> retargeted (134, 2)."""
    height, width = target_hw
    size = np.array([width, height], dtype=np.float64)
    old = keypoints * size
    new = old.copy()
    vis = scores > VISIBLE_SCORE
    ratio = {}
    for bone in BONES:
        parent, child = bone
        vec = old[child] - old[parent]
        norm = float(np.linalg.norm(vec))
        if bone in ref_lengths and vis[parent] and vis[child] and norm > 0:
            new[child] = new[parent] + vec / norm * ref_lengths[bone]
            ratio[bone] = ref_lengths[bone] / norm
        else:
            new[child] = new[parent] + vec
    for part, (parent, joint) in ATTACHED:
        scale = ratio.get((parent, joint), 1.0)
        new[part] = new[joint] + (old[part] - old[joint]) * scale
    return new / size


def retarget(pose: Pose, reference: Pose, target_hw: tuple[int, int],
             ref_lengths: dict | None = None) -> Pose:
    """Every person of `pose` rebuilt on the reference's first person's bone lengths."""
    if ref_lengths is None:
        ref_lengths = reference_bone_lengths(reference, target_hw)
    if pose.num_people == 0:
        return pose
    kp = np.stack([retarget_person(k, s, ref_lengths, target_hw)
                   for k, s in zip(pose.keypoints, pose.scores)])
    return Pose(kp, pose.scores)
