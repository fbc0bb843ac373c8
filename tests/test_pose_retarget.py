"""Retargeting keeps the reference's bone lengths and the driving joint angles."""

import numpy as np

from controlnext_jax.pose.retarget import BONES, reference_bone_lengths, retarget
from controlnext_jax.pose.types import FACE, LEFT_HAND, Pose
from controlnext_jax.pose.video import align_poses

TARGET_HW = (1024, 576)
SIZE = np.array([TARGET_HW[1], TARGET_HW[0]], dtype=np.float64)  # (w, h) pixels

# A standing OpenPose skeleton (normalised): short reference person.
STAND = np.array([[0.50, 0.20], [0.50, 0.28], [0.42, 0.28], [0.40, 0.38], [0.39, 0.47],
                  [0.58, 0.28], [0.60, 0.38], [0.61, 0.47], [0.45, 0.50], [0.45, 0.62],
                  [0.45, 0.74], [0.55, 0.50], [0.55, 0.62], [0.55, 0.74], [0.48, 0.19],
                  [0.52, 0.19], [0.46, 0.20], [0.54, 0.20]])


def make_pose(body, rng, n=1):
    kp = np.zeros((n, 134, 2))
    kp[:, :18] = body
    kp[:, 18:] = rng.uniform(0.3, 0.7, (n, 116, 2))
    kp[:, LEFT_HAND] = body[7] + rng.normal(0, 0.01, (n, 21, 2))
    kp[:, FACE] = body[0] + rng.normal(0, 0.01, (n, 68, 2))
    return Pose(kp, np.full((n, 134), 0.9))


def dancer_frames(rng, frames=5):
    """A tall dancer (legs 1.6x, arms 1.3x) moving: random joint angles per frame."""
    out = []
    for _ in range(frames):
        body = np.zeros((18, 2))
        body[1] = [0.5 + rng.uniform(-0.1, 0.1), 0.25]
        scale = {b: (1.6 if b[0] in (8, 9, 11, 12) or b[1] in (8, 11) else 1.3) for b in BONES}
        for parent, child in BONES:
            length = np.linalg.norm((STAND[child] - STAND[parent]) * SIZE)
            angle = rng.uniform(-np.pi, np.pi)
            step = length * scale[(parent, child)] * np.array([np.cos(angle), np.sin(angle)])
            body[child] = body[parent] + step / SIZE
        out.append(make_pose(body, rng))
    return out


def angle(v):
    return np.arctan2(v[..., 1], v[..., 0])


def test_keeps_reference_bone_lengths_and_driving_angles_on_every_frame():
    rng = np.random.default_rng(0)
    reference = make_pose(STAND, rng)
    ref_len = reference_bone_lengths(reference, TARGET_HW)
    assert len(ref_len) == len(BONES)
    driving = dancer_frames(rng)
    out = [retarget(p, reference, TARGET_HW) for p in driving]
    for src, dst in zip(driving, out):
        new = dst.keypoints[0] * SIZE
        old = src.keypoints[0] * SIZE
        np.testing.assert_allclose(new[1], old[1])  # rooted at the driving neck
        for parent, child in BONES:
            v_new, v_old = new[child] - new[parent], old[child] - old[parent]
            np.testing.assert_allclose(np.linalg.norm(v_new), ref_len[(parent, child)], rtol=1e-9)
            np.testing.assert_allclose(angle(v_new), angle(v_old), atol=1e-9)
            # and it differs from the dancer's own (longer) bone
            assert not np.isclose(np.linalg.norm(v_old), ref_len[(parent, child)])
        # the left hand moved rigidly with its wrist and scaled with the forearm
        hand_old = old[LEFT_HAND] - old[7]
        hand_new = new[LEFT_HAND] - new[7]
        forearm = ref_len[(6, 7)] / np.linalg.norm(old[7] - old[6])
        np.testing.assert_allclose(hand_new, hand_old * forearm, atol=1e-9)
        np.testing.assert_array_equal(dst.scores, src.scores)


def test_invisible_bones_keep_the_driving_vector():
    rng = np.random.default_rng(1)
    reference = make_pose(STAND, rng)
    driving = dancer_frames(rng, 1)[0]
    scores = driving.scores.copy()
    scores[0, 3] = 0.1  # right elbow not visible: shoulder-elbow and elbow-wrist kept
    driving = Pose(driving.keypoints, scores)
    new = retarget(driving, reference, TARGET_HW).keypoints[0] * SIZE
    old = driving.keypoints[0] * SIZE
    for parent, child in ((2, 3), (3, 4)):
        np.testing.assert_allclose(new[child] - new[parent], old[child] - old[parent], atol=1e-9)


def test_retarget_mode_of_the_pipeline():
    rng = np.random.default_rng(2)
    reference = make_pose(STAND, rng)
    driving = dancer_frames(rng, 3) + [Pose.empty()]
    out, rescale = align_poses(reference, driving, "retarget", TARGET_HW, TARGET_HW)
    assert rescale.frames_used == 3 and out[-1].num_people == 0
    ref_len = reference_bone_lengths(reference, TARGET_HW)
    for pose in out[:-1]:
        new = pose.keypoints[0] * SIZE
        for bone, length in ref_len.items():
            np.testing.assert_allclose(np.linalg.norm(new[bone[1]] - new[bone[0]]), length,
                                       rtol=1e-9)
