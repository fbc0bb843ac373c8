"""Pose metrics on synthetic keypoint sets with known answers."""

import numpy as np
import pytest

from controlnext_jax.metrics.pose_metrics import (
    OKS_THRESHOLDS,
    OPENPOSE18_SIGMAS,
    average_precision,
    oks,
    pose_accuracy,
)
from controlnext_jax.pose.types import BODY_NAMES


def _targets(n=5, seed=0):
    """n frames of 18 keypoints inside a 100 x 200 px body box (x 50..150, y 20..220)."""
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.uniform(50, 150, (n, 18)), rng.uniform(20, 220, (n, 18))], axis=-1)
    kp[:, 0] = (50, 20)
    kp[:, 1] = (150, 220)  # pin the box corners: every frame's box is exactly 100 x 200
    return kp, np.ones((n, 18), bool)


def test_sigma_mapping_to_openpose18():
    sig = dict(zip(BODY_NAMES, OPENPOSE18_SIGMAS))
    assert sig["nose"] == 0.026 and sig["right_hip"] == 0.107 and sig["left_ankle"] == 0.089
    assert sig["neck"] == sig["left_shoulder"] == 0.079  # documented choice: neck = mean of shoulders


def test_identical_poses():
    kp, vis = _targets()
    summary, curves = pose_accuracy(kp, vis, np.ones(vis.shape), kp, vis)
    assert summary["AP"] == 1.0 and summary["AP50"] == 1.0 and summary["mean_oks"] == 1.0
    assert summary["PCK@0.05"] == summary["PCK@0.1"] == summary["PCK@0.2"] == 1.0
    assert summary["AKD_px"] == 0.0 and summary["MKR"] == 0.0
    np.testing.assert_array_equal(curves["oks"], 1.0)


def test_shift_by_known_amount():
    kp, vis = _targets()
    shift = 15.0  # px; body size max(100, 200) = 200: 0.05 -> 10 px, 0.1 -> 20 px, 0.2 -> 40 px
    pred = kp + np.array([shift, 0.0])
    summary, curves = pose_accuracy(pred, vis, np.ones(vis.shape), kp, vis)
    expected_oks = np.mean(np.exp(-shift ** 2 / (2 * (100 * 200) * (2 * OPENPOSE18_SIGMAS) ** 2)))
    np.testing.assert_allclose(curves["oks"], expected_oks, rtol=1e-12)
    assert summary["AKD_px"] == pytest.approx(shift)
    assert (summary["PCK@0.05"], summary["PCK@0.1"], summary["PCK@0.2"]) == (0.0, 1.0, 1.0)
    assert summary["MKR"] == 0.0
    # every frame has the same OKS: AP at threshold t is 1 if OKS >= t else 0
    assert summary["AP"] == pytest.approx(np.mean(OKS_THRESHOLDS <= expected_oks))
    assert 0.0 < summary["AP"] < 1.0


def test_missing_keypoints():
    kp, vis = _targets()
    pred_vis = vis.copy()
    pred_vis[:, [4, 7, 10]] = False  # both wrists and the right ankle not detected
    summary, curves = pose_accuracy(kp, pred_vis, np.ones(vis.shape), kp, vis)
    assert summary["MKR"] == pytest.approx(3 / 18)
    np.testing.assert_allclose(curves["oks"], 15 / 18)
    assert summary["PCK@0.1"] == pytest.approx(15 / 18)
    assert summary["AKD_px"] == 0.0  # the keypoints found are exact


def test_target_keypoints_missing_are_not_counted():
    kp, vis = _targets()
    tvis = vis.copy()
    tvis[:, 5:9] = False
    pred = kp.copy()
    pred[:, 5:9] += 1000.0  # way off, but the target does not have these points
    summary, _ = pose_accuracy(pred, vis, np.ones(vis.shape), kp, tvis)
    assert summary["mean_oks"] == 1.0 and summary["MKR"] == 0.0 and summary["AKD_px"] == 0.0
    tvis[2] = False  # a frame with no target person is left out
    summary, curves = pose_accuracy(pred, vis, np.ones(vis.shape), kp, tvis)
    assert np.isnan(curves["oks"][2]) and summary["frames_with_target"] == 4 and summary["AP"] == 1.0


def test_undetected_frames_cap_recall():
    kp, vis = _targets(n=4)
    pred_vis = vis.copy()
    pred_vis[3] = False  # no person found in one frame of four
    summary, _ = pose_accuracy(kp, pred_vis, np.ones(vis.shape), kp, vis)
    # precision 1 up to recall 0.75: 76 of COCO's 101 recall points
    assert summary["AP"] == pytest.approx(76 / 101)


def test_ap_ranks_by_score():
    # a confident false positive ranked first halves the precision
    ap = average_precision(np.array([0.3, 1.0]), np.array([0.9, 0.5]), np.array([True, True]), 0.5)
    assert ap == pytest.approx(51 * 0.5 / 101)
    ap = average_precision(np.array([0.3, 1.0]), np.array([0.5, 0.9]), np.array([True, True]), 0.5)
    assert ap == pytest.approx(51 / 101)


def test_shape_errors():
    kp, vis = _targets()
    with pytest.raises(ValueError, match="visibility"):
        oks(kp, vis[:, :5], kp, vis)
    with pytest.raises(ValueError, match="sigmas"):
        oks(kp, vis, kp, vis, sigmas=np.ones(17))


def test_keypoints_outside_the_canvas_are_not_visible():
    from controlnext_jax.metrics.dataset import AlignedClip
    from controlnext_jax.metrics.evaluators import PoseEvaluator, visible

    kp = np.full((2, 18, 2), 0.5)
    kp[:, 3] = (1.2, 0.5)  # off the right edge
    kp[:, 4] = (0.5, -0.1)  # above the top
    sc = np.full((2, 18), 0.9)
    np.testing.assert_array_equal(visible(kp, sc, 0.3)[0], [i not in (3, 4) for i in range(18)])
    # target points off the canvas are not asked for; a detection off the canvas is a miss
    target = kp.copy()
    target[:, 5] = (0.25, 0.75)
    detected = kp.copy()
    detected[:, 5] = (-0.5, 0.75)
    frames = np.zeros((2, 40, 40, 3), np.uint8)
    clip = AlignedClip("c", None, frames, frames, frames, np.arange(2), (target, sc))
    found = iter([(detected[0], sc[0]), (detected[1], sc[1])])
    evaluator = PoseEvaluator(lambda frame: next(found))
    evaluator.update(clip)
    result = dict(evaluator.results())
    assert result["MKR"] == pytest.approx(1 / 16)  # 16 target keypoints inside, one of them detected outside
    assert result["PCK@0.2"] == pytest.approx(15 / 16)
