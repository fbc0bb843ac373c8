"""Retargeting keeps the reference's bone lengths and the driving joint angles, except
for bones foreshortened in either pose; hands and face stay within a bounded factor."""

import numpy as np
import pytest

from controlnext_jax.pose.retarget import (
    BONES,
    FORESHORTENED,
    FULL,
    MAX_PART_SCALE,
    ReferenceSkeleton,
    fullness,
    reference_bone_lengths,
    retarget,
    retarget_person,
)
from controlnext_jax.pose.types import FACE, LEFT_HAND, RIGHT_HAND, Pose
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
    """A tall dancer (legs 1.6x, the rest 1.3x) moving: random joint angles per frame, every
    bone seen at full length (in the image plane)."""
    out = []
    for _ in range(frames):
        body = np.zeros((18, 2))
        body[1] = [0.5 + rng.uniform(-0.1, 0.1), 0.25]
        scale = {b: (1.6 if b[0] in (8, 9, 11, 12) else 1.3) for b in BONES}
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
    assert min(ReferenceSkeleton.of(reference, TARGET_HW).fullness.values()) >= FULL  # nothing foreshortened
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


def _foreshorten(pose: Pose, wrist: int, elbow: int, share: float) -> Pose:
    """The forearm elbow -> wrist shortened to `share` of its length (pointing at the
    camera), the hand moved rigidly with the wrist."""
    kp = pose.keypoints.copy()
    px = kp[0] * SIZE
    new_wrist = px[elbow] + (px[wrist] - px[elbow]) * share
    hand = LEFT_HAND if wrist == 7 else RIGHT_HAND
    kp[0, hand] += (new_wrist - px[wrist]) / SIZE
    kp[0, wrist] = new_wrist / SIZE
    return Pose(kp, pose.scores)


def _hand_extent(pose: Pose, hand=LEFT_HAND) -> float:
    pts = pose.keypoints[0, hand] * SIZE
    return float(np.ptp(pts, axis=0).max())


def _with_hand(pose: Pose, rng, size_px: float) -> Pose:
    """A spread hand of about `size_px` at the left wrist."""
    kp = pose.keypoints.copy()
    kp[0, LEFT_HAND] = kp[0, 7] + rng.uniform(-size_px / 2, size_px / 2, (21, 2)) / SIZE
    return Pose(kp, pose.scores)


def test_forearm_pointing_at_the_camera_keeps_its_driving_length_and_hand_size():
    rng = np.random.default_rng(3)
    reference = make_pose(STAND, rng)
    driving = _with_hand(dancer_frames(rng, 1)[0], rng, 60.0)
    short = _foreshorten(driving, 7, 6, 0.15)  # e.g. a 120 px forearm seen as 18 px
    new, weights = retarget_person(short.keypoints[0], short.scores[0],
                                   ReferenceSkeleton.of(reference, TARGET_HW), TARGET_HW)
    assert fullness({b: np.linalg.norm(np.diff(short.keypoints[0, list(b)] * SIZE, axis=0))
                     for b in BONES})[(6, 7)] < FORESHORTENED
    assert weights[(6, 7)] == 0.0 and weights[(5, 6)] == 1.0  # only the foreshortened bone falls back
    new, old = new * SIZE, short.keypoints[0] * SIZE
    # the forearm keeps its (rescaled) driving vector: not stretched to the reference's 92 px
    np.testing.assert_allclose(new[7] - new[6], old[7] - old[6], atol=1e-9)
    # the hand follows the wrist at its rescaled size (the unbounded ratio would be 92 / 18 = 5x)
    np.testing.assert_allclose(new[LEFT_HAND] - new[7], old[LEFT_HAND] - old[7], atol=1e-9)
    # the other arm is retargeted as usual
    ref_len = reference_bone_lengths(reference, TARGET_HW)
    assert np.linalg.norm(new[4] - new[3]) == pytest.approx(ref_len[(3, 4)])


def test_foreshortened_reference_forearm_does_not_shrink_the_driving_hands():
    rng = np.random.default_rng(4)
    reference = _foreshorten(make_pose(STAND, rng), 7, 6, 0.3)  # hands clasped in front
    skeleton = ReferenceSkeleton.of(reference, TARGET_HW)
    assert skeleton.fullness[(6, 7)] < FORESHORTENED <= FULL <= skeleton.fullness[(3, 4)]
    for driving in dancer_frames(rng, 4):
        driving = _with_hand(driving, rng, 50.0)
        out = retarget(driving, skeleton, TARGET_HW)
        new, old = out.keypoints[0] * SIZE, driving.keypoints[0] * SIZE
        np.testing.assert_allclose(new[7] - new[6], old[7] - old[6], atol=1e-9)
        assert _hand_extent(out) == pytest.approx(_hand_extent(driving))


def test_partly_foreshortened_bone_blends_and_hand_scale_is_bounded():
    rng = np.random.default_rng(5)
    reference = make_pose(STAND, rng)
    skeleton = ReferenceSkeleton.of(reference, TARGET_HW)
    driving = _with_hand(dancer_frames(rng, 1)[0], rng, 60.0)
    forearm = np.linalg.norm((driving.keypoints[0, 7] - driving.keypoints[0, 6]) * SIZE)
    full_share = fullness({b: np.linalg.norm(np.diff(driving.keypoints[0, list(b)] * SIZE, axis=0))
                           for b in BONES})[(6, 7)]
    lengths = []
    for share in np.linspace(0.05, 1.0, 40):
        short = _foreshorten(driving, 7, 6, share)
        new, w = retarget_person(short.keypoints[0], short.scores[0], skeleton, TARGET_HW)
        new = new * SIZE
        lengths.append(np.linalg.norm(new[7] - new[6]))
        ratio = lengths[-1] / (forearm * share)
        hand_scale = _hand_extent(Pose(new[None] / SIZE, short.scores)) / _hand_extent(short)
        assert 1 / MAX_PART_SCALE - 1e-9 <= hand_scale <= MAX_PART_SCALE + 1e-9
        assert hand_scale == pytest.approx(np.clip(ratio, 1 / MAX_PART_SCALE, MAX_PART_SCALE))
        f = full_share * share
        assert w[(6, 7)] == pytest.approx(np.clip((f - FORESHORTENED) / (FULL - FORESHORTENED), 0, 1))
    # the drawn forearm length never jumps as the arm turns towards the camera
    steps = np.abs(np.diff(lengths))
    assert steps.max() < 0.1 * max(lengths)


def test_face_scale_is_bounded_when_the_head_bone_is_short():
    rng = np.random.default_rng(6)
    reference = make_pose(STAND, rng)
    driving = dancer_frames(rng, 1)[0]
    kp = driving.keypoints.copy()
    # head bent forward: the neck-nose bone seen at 40 % of the reference's, face kept
    neck, nose = kp[0, 1] * SIZE, kp[0, 0] * SIZE
    ref_head = reference_bone_lengths(reference, TARGET_HW)[(1, 0)]
    moved = neck + (nose - neck) / np.linalg.norm(nose - neck) * 0.4 * ref_head
    kp[0, FACE] += (moved - nose) / SIZE
    kp[0, [0, 14, 15, 16, 17]] += (moved - nose) / SIZE
    short = Pose(kp, driving.scores)
    out = retarget(short, reference, TARGET_HW)
    face_new = np.ptp(out.keypoints[0, FACE] * SIZE, axis=0).max()
    face_old = np.ptp(short.keypoints[0, FACE] * SIZE, axis=0).max()
    assert face_new <= MAX_PART_SCALE * face_old + 1e-9


def test_hand_scale_is_bounded_for_a_long_armed_reference():
    rng = np.random.default_rng(7)
    reference = _foreshorten(make_pose(STAND, rng), 7, 6, 2.2)  # forearm 2.2x the standing one
    skeleton = ReferenceSkeleton.of(reference, TARGET_HW)
    driving = _with_hand(dancer_frames(rng, 1)[0], rng, 60.0)
    out = retarget(driving, skeleton, TARGET_HW)
    new, old = out.keypoints[0] * SIZE, driving.keypoints[0] * SIZE
    forearm_ratio = skeleton.lengths[(6, 7)] / np.linalg.norm(old[7] - old[6])
    assert forearm_ratio > 1.6  # the forearm itself takes the reference's length
    assert np.linalg.norm(new[7] - new[6]) == pytest.approx(skeleton.lengths[(6, 7)])
    # the hand grows by the bound only, not by the forearm's ratio
    np.testing.assert_allclose(new[LEFT_HAND] - new[7], (old[LEFT_HAND] - old[7]) * MAX_PART_SCALE, atol=1e-9)
