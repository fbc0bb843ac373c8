"""Pose accuracy: poses detected on generated frames against the driving poses the model got.

Pure functions over keypoint arrays: `pred` and `target` are (n, k, 2) pixel coordinates
(x, y), `pred_visible` / `target_visible` (n, k) booleans (DWPose convention: score > 0.3),
one person per frame. The driving keypoints play the role of ground truth; frames whose
target has no visible keypoint are left out of every metric (COCO ignores such people).

- OKS (COCO): sum_i exp(-d_i^2 / (2 s^2 k_i^2)) over target-visible keypoints, divided by
  their count; a keypoint missing from the prediction scores 0. k_i = 2 sigma_i with the
  COCO sigmas; s^2 is the object area, here the area of the target's visible-keypoint
  box (COCO uses the segmentation area, which keypoint-only data does not have).
- AP: COCO keypoint AP for one person per frame: detections ranked by score, a true
  positive at threshold t when OKS >= t, 101-point interpolated precision, averaged over
  t = 0.50:0.05:0.95 (also AP50 and AP75). A frame without detection is a missed person.
- PCK@a: share of target-visible keypoints whose prediction lies within
  a * max(box width, box height) of the target (box: the target's visible keypoints);
  missing predictions count as wrong.
- AKD: mean pixel distance over keypoints visible in both.
- MKR: share of target-visible keypoints the prediction misses.
"""

from __future__ import annotations

import numpy as np

from controlnext_jax.pose.types import BODY_NAMES

# COCO keypoint sigmas (cocoapi `COCOeval.computeOks`), in COCO-17 order.
COCO_SIGMAS = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
    "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
    "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
}
# COCO has no neck. DWPose's neck is the mean of the two shoulders, so its localisation
# error behaves like theirs: it gets the shoulder sigma.
OPENPOSE18_SIGMAS = np.array([COCO_SIGMAS["left_shoulder"] if name == "neck" else COCO_SIGMAS[name]
                              for name in BODY_NAMES])
OKS_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
PCK_THRESHOLDS = (0.05, 0.1, 0.2)


def _check(pred, pred_visible, target, target_visible) -> tuple[np.ndarray, ...]:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    pv, tv = np.asarray(pred_visible, bool), np.asarray(target_visible, bool)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"keypoints must be two (n, k, 2) arrays of one shape, got {pred.shape} and {target.shape}")
    if pv.shape != pred.shape[:2] or tv.shape != pred.shape[:2]:
        raise ValueError(f"visibility must be (n, k) = {pred.shape[:2]}, got {pv.shape} and {tv.shape}")
    return pred, pv, target, tv


def target_boxes(target: np.ndarray, target_visible: np.ndarray) -> np.ndarray:
    """(n, 2) width and height of each frame's visible target keypoints (0 where none)."""
    lo = np.where(target_visible[..., None], target, np.inf).min(axis=1)
    hi = np.where(target_visible[..., None], target, -np.inf).max(axis=1)
    return np.where(np.isfinite(hi - lo), hi - lo, 0.0)


def distances(pred, pred_visible, target, target_visible) -> np.ndarray:
    """(n, k) pixel distances; inf where the prediction misses a keypoint, nan where the
    target has none."""
    pred, pv, target, tv = _check(pred, pred_visible, target, target_visible)
    d = np.linalg.norm(pred - target, axis=-1)
    return np.where(tv, np.where(pv, d, np.inf), np.nan)


def oks(pred, pred_visible, target, target_visible, sigmas: np.ndarray = OPENPOSE18_SIGMAS) -> np.ndarray:
    """(n,) object keypoint similarity per frame (nan where the target has no keypoint)."""
    pred, pv, target, tv = _check(pred, pred_visible, target, target_visible)
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.shape != (pred.shape[1],):
        raise ValueError(f"sigmas must have one entry per keypoint ({pred.shape[1]}), got {sigmas.shape}")
    wh = target_boxes(target, tv)
    area = wh[:, 0] * wh[:, 1]
    d2 = np.sum((pred - target) ** 2, axis=-1)
    k2 = (2 * sigmas) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        e = d2 / (2 * np.maximum(area, np.finfo(np.float64).eps)[:, None] * k2[None, :])
        sim = np.where(tv & pv, np.exp(-e), 0.0)
        count = tv.sum(axis=1)
        return np.where(count > 0, sim.sum(axis=1) / np.maximum(count, 1), np.nan)


def average_precision(oks_values: np.ndarray, scores: np.ndarray, detected: np.ndarray,
                      threshold: float) -> float:
    """COCO AP at one OKS threshold, one target per frame and at most one detection.

    oks_values (n,) per frame (nan frames are ignored), scores (n,) detection confidence,
    detected (n,) whether the frame has a detection at all."""
    oks_values, scores, detected = np.asarray(oks_values), np.asarray(scores, np.float64), np.asarray(detected, bool)
    valid = ~np.isnan(oks_values)
    num_targets = int(valid.sum())
    if num_targets == 0:
        return float("nan")
    keep = valid & detected
    order = np.argsort(-scores[keep], kind="mergesort")
    tp = (oks_values[keep][order] >= threshold).astype(np.float64)
    if tp.size == 0:
        return 0.0
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = tp_cum / num_targets
    precision = tp_cum / (tp_cum + fp_cum)
    # COCOeval: make precision monotone from the right, then sample at 101 recall points.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    recall_points = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, recall_points, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def pck(pred, pred_visible, target, target_visible, alpha: float) -> np.ndarray:
    """(n,) share of target keypoints within alpha * max(box w, box h) (nan: no target)."""
    d = distances(pred, pred_visible, target, target_visible)
    tv = np.asarray(target_visible, bool)
    size = target_boxes(np.asarray(target, np.float64), tv).max(axis=1)
    hit = np.where(tv, d <= alpha * size[:, None], False)
    count = tv.sum(axis=1)
    return np.where(count > 0, hit.sum(axis=1) / np.maximum(count, 1), np.nan)


def akd(pred, pred_visible, target, target_visible) -> np.ndarray:
    """(n,) mean pixel distance over keypoints visible in both (nan: none)."""
    d = distances(pred, pred_visible, target, target_visible)
    both = np.isfinite(d)
    with np.errstate(invalid="ignore"):
        return np.where(both.any(axis=1), np.where(both, d, 0.0).sum(axis=1) / both.sum(axis=1), np.nan)


def mkr(pred_visible, target_visible) -> np.ndarray:
    """(n,) share of target-visible keypoints missing from the prediction (nan: no target)."""
    pv, tv = np.asarray(pred_visible, bool), np.asarray(target_visible, bool)
    count = tv.sum(axis=1)
    return np.where(count > 0, (tv & ~pv).sum(axis=1) / np.maximum(count, 1), np.nan)


def pose_accuracy(pred, pred_visible, pred_scores, target, target_visible,
                  sigmas: np.ndarray = OPENPOSE18_SIGMAS) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All pose metrics: (summary, per-frame curves).

    pred_scores (n, k) keypoint scores; a frame's detection score is the mean score of
    its visible predicted keypoints and a frame counts as detected if any is visible.
    Summary values average over frames (AKD over keypoints visible in both)."""
    pred, pv, target, tv = _check(pred, pred_visible, target, target_visible)
    scores = np.asarray(pred_scores, np.float64)
    frame_oks = oks(pred, pv, target, tv, sigmas)
    detected = pv.any(axis=1)
    det_score = np.where(detected, np.where(pv, scores, 0.0).sum(axis=1) / np.maximum(pv.sum(axis=1), 1), 0.0)
    aps = {t: average_precision(frame_oks, det_score, detected, t) for t in OKS_THRESHOLDS}
    curves = {"oks": frame_oks, "akd_px": akd(pred, pv, target, tv), "mkr": mkr(pv, tv)}
    curves.update({f"pck@{a}": pck(pred, pv, target, tv, a) for a in PCK_THRESHOLDS})
    d = distances(pred, pv, target, tv)
    both = np.isfinite(d)

    def mean(x):
        return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")

    summary = {
        "AP": float(np.mean(list(aps.values()))),
        "AP50": aps[0.5],
        "AP75": aps[0.75],
        "mean_oks": mean(frame_oks),
        **{f"PCK@{a}": mean(curves[f"pck@{a}"]) for a in PCK_THRESHOLDS},
        "AKD_px": float(d[both].mean()) if both.any() else float("nan"),
        "MKR": float((tv & ~pv).sum() / tv.sum()) if tv.any() else float("nan"),
        "frames": int(len(pred)),
        "frames_with_target": int(np.sum(tv.any(axis=1))),
    }
    return summary, curves
