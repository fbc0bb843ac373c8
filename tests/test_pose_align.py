"""Least-squares rescale: recovers a known scale and offset from synthetic keypoints."""

import numpy as np
import pytest

from controlnext_jax.pose.align import ALIGN_BODY_POINTS, ReferencePoseError, fit_rescale
from controlnext_jax.pose.types import Pose
from controlnext_jax.pose.video import align_poses

VIDEO_HW = (720, 1280)  # driving frames, landscape
TARGET_HW = (1024, 576)  # model output, portrait


def person(rng, scores=0.9):
    kp = rng.uniform(0.2, 0.8, (1, 134, 2))
    sc = np.full((1, 134), scores, dtype=np.float64)
    return kp, sc


def known_transform():
    ay, by, bx = 0.8, 0.05, 0.1
    # isotropic in pixels: ax * width / video_w == ay * height / video_h
    ax = ay / (VIDEO_HW[0] / VIDEO_HW[1] / TARGET_HW[0] * TARGET_HW[1])
    return np.array([ax, ay]), np.array([bx, by])


def test_recovers_known_scale_and_offset():
    rng = np.random.default_rng(0)
    scale, offset = known_transform()
    ref_kp, ref_sc = person(rng)
    ref_sc[0, 14] = 0.1  # an eye hidden in the reference: not used for the fit
    reference = Pose(ref_kp, ref_sc)
    ids = [i for i in ALIGN_BODY_POINTS if i != 14]
    driving = []
    for _ in range(6):
        kp, sc = person(rng)
        # the alignment points sit exactly where the inverse map puts the reference's
        kp[0, ids] = (ref_kp[0, ids] - offset) / scale
        sc[0, 3] = 0.01  # low scores do not exclude a driving row
        driving.append(Pose(kp, sc))
    # frames that must not enter the fit: two people, and nobody
    driving.append(Pose(rng.uniform(0, 1, (2, 134, 2)), np.ones((2, 134))))
    driving.append(Pose.empty())

    fit = fit_rescale(reference, driving, VIDEO_HW, TARGET_HW)
    np.testing.assert_allclose(fit.scale, scale, rtol=1e-9)
    np.testing.assert_allclose(fit.offset, offset, atol=1e-9)
    assert fit.frames_used == 6

    aligned, used = align_poses(reference, driving, "rescale", VIDEO_HW, TARGET_HW)
    np.testing.assert_allclose(aligned[0].keypoints[0, ids], ref_kp[0, ids], atol=1e-9)
    assert aligned[-1].num_people == 0  # an empty frame stays empty
    assert aligned[-2].num_people == 2  # every person is moved, not only fitted ones
    np.testing.assert_allclose(aligned[-2].keypoints, driving[-2].keypoints * scale + offset)


def test_least_squares_with_noise_matches_polyfit():
    rng = np.random.default_rng(1)
    reference = Pose(*person(rng))
    driving = [Pose(*person(rng)) for _ in range(5)]
    fit = fit_rescale(reference, driving, VIDEO_HW, TARGET_HW)
    ids = list(ALIGN_BODY_POINTS)
    y = np.concatenate([p.keypoints[0, ids, 1] for p in driving])
    t = np.tile(reference.keypoints[0, ids, 1], 5)
    design = np.stack([y, np.ones_like(y)], 1)
    (ay, by), *_ = np.linalg.lstsq(design, t, rcond=None)
    np.testing.assert_allclose(fit.scale[1], ay, rtol=1e-9)
    np.testing.assert_allclose(fit.offset[1], by, rtol=1e-9, atol=1e-12)
    x = np.concatenate([p.keypoints[0, ids, 0] for p in driving])
    np.testing.assert_allclose(fit.offset[0],
                               np.mean(np.tile(reference.keypoints[0, ids, 0], 5) - x * fit.scale[0]))


def test_reference_without_person_is_a_clear_error():
    rng = np.random.default_rng(2)
    driving = [Pose(*person(rng))]
    with pytest.raises(ReferencePoseError, match="no person found in the reference"):
        fit_rescale(Pose.empty(), driving, VIDEO_HW, TARGET_HW)
    # DWPose's whole-image fallback on an empty photo: a "person" with no visible point
    faint = Pose(*person(rng, scores=0.05))
    with pytest.raises(ReferencePoseError, match="no person found"):
        fit_rescale(faint, driving, VIDEO_HW, TARGET_HW)


def test_driving_without_people_never_crashes():
    rng = np.random.default_rng(3)
    reference = Pose(*person(rng))
    nobody = [Pose.empty(), Pose.empty()]
    fit = fit_rescale(reference, nobody, VIDEO_HW, TARGET_HW)
    assert np.all(fit.scale == 1) and np.all(fit.offset == 0) and fit.frames_used == 0
    for mode in ("rescale", "retarget", "none"):
        out, _ = align_poses(reference, nobody, mode, VIDEO_HW, TARGET_HW)
        assert [p.num_people for p in out] == [0, 0]
    # only multi-person frames: fitted on each frame's first person instead of failing
    crowd = [Pose(rng.uniform(0.2, 0.8, (2, 134, 2)), np.ones((2, 134))) for _ in range(3)]
    assert fit_rescale(reference, crowd, VIDEO_HW, TARGET_HW).frames_used == 3


def test_unknown_mode_is_rejected():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="align must be one of rescale, retarget, none"):
        align_poses(Pose(*person(rng)), [], "stretch", VIDEO_HW, TARGET_HW)
