"""Draw a Pose the way the DWPose release drew the ControlNeXt training data.

The model only ever saw pose frames made by that drawing, so every detail counts and
is reproduced here on purpose (docs/release_semantics.md, "Pose extraction and alignment"):

- the canvas is drawn with its short side at 2160 px, then shrunk to the output size
  with cv2 INTER_LINEAR, so the line widths below are big-canvas pixels (ours: below a
  SMALL_OUTPUT short side the canvas is SMALL_CANVAS_RATIO times the output instead, see
  `canvas_size`);
- colours are written as if the canvas were BGR and the result is converted
  BGR -> RGB, so every listed colour ends up with red and blue swapped;
- body: 17 limbs as filled ellipse polygons, dimmed with the whole canvas by 0.6,
  then the joints as circles; hands: lines and red joints; face: grey dots.

A keypoint with non-finite coordinates (not produced by the detector) is never drawn;
DWPose output is always finite, so this changes nothing for it.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from controlnext_jax.pose.types import (
    BODY,
    FACE,
    LEFT_HAND,
    LIMBS,
    NUM_BODY,
    NUM_DRAWN_LIMBS,
    RIGHT_HAND,
    VISIBLE_SCORE,
    Pose,
)

CANVAS_SHORT_SIDE = 2160
# Below this output short side the release's canvas would shrink more than 8x, and INTER_LINEAR's
# 2x2 taps then miss most of each stroke: limbs break into dashes and joints vanish (the release
# never drew that small: its training poses and the endpoint defaults are 576 px and more). There
# the canvas is SMALL_CANVAS_RATIO times the output, so limbs are 2 px wide and joints 4 px
# across, unbroken: the drawing the embedded model (128x96, docs/embedded_model.md) trains on.
SMALL_OUTPUT = 256
SMALL_CANVAS_RATIO = 4
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_JOINT_RADIUS = 4
FACE_RADIUS = 3
LIMB_SCORE = VISIBLE_SCORE  # a limb is drawn when both ends score at least this
JOINT_SCORE = VISIBLE_SCORE  # a joint is drawn when it scores above this
BODY_DIM = 0.6
# uint8 -> uint8 table of the dimming, computed as the release computes it per pixel
# (float multiply, truncation), so a table lookup gives identical values.
_DIM_TABLE = (np.arange(256, dtype=np.uint8) * BODY_DIM).astype(np.uint8)


# One colour per limb and per joint (index i colours limb i and joint i), in the
# canvas's channel order (BGR), i.e. shown swapped in the RGB result.
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

# Hand bones: wrist to each finger base, then along each finger.
HAND_EDGES = tuple(
    edge
    for finger in range(5)
    for edge in ((0, 4 * finger + 1), (4 * finger + 1, 4 * finger + 2),
                 (4 * finger + 2, 4 * finger + 3), (4 * finger + 3, 4 * finger + 4))
)


def _scaled(color, factor: float) -> list[int]:
    # int() truncates, as the release's confidence blending does.
    return [int(c * factor) for c in color]


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _draw_body(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    body = pose.keypoints[:, BODY]
    score = pose.scores[:, BODY]
    # Limbs: loop limb-major, person-minor (later people paint over earlier ones).
    for i in range(NUM_DRAWN_LIMBS):
        a, b = LIMBS[i]
        for n in range(pose.num_people):
            if score[n, a] < LIMB_SCORE or score[n, b] < LIMB_SCORE:
                continue
            cols = body[n, (a, b), 0] * float(w)
            rows = body[n, (a, b), 1] * float(h)
            if not _finite(*cols, *rows):
                continue
            # Plain Euclidean norm (not hypot): int(length / 2) must round the same way.
            length = ((rows[0] - rows[1]) ** 2 + (cols[0] - cols[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(rows[0] - rows[1], cols[0] - cols[1]))
            polygon = cv2.ellipse2Poly(
                (int(np.mean(cols)), int(np.mean(rows))),
                (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, _scaled(COLORS[i], score[n, a] * score[n, b]))

    canvas = cv2.LUT(canvas, _DIM_TABLE)  # == (canvas * 0.6).astype(uint8), 20x faster

    for i in range(NUM_BODY):
        for n in range(pose.num_people):
            if not score[n, i] > JOINT_SCORE:
                continue
            x, y = body[n, i]
            if not _finite(x, y):
                continue
            cv2.circle(canvas, (int(x * w), int(y * h)), JOINT_RADIUS,
                       _scaled(COLORS[i], score[n, i]), thickness=-1)
    return canvas


def _draw_hands(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    # All left hands first, then all right hands, as the release stacks them.
    hands = [(pose.keypoints[n, part], pose.scores[n, part])
             for part in (LEFT_HAND, RIGHT_HAND) for n in range(pose.num_people)]
    for points, scores in hands:
        for ie, (a, b) in enumerate(HAND_EDGES):
            if not _finite(*points[a], *points[b]):
                continue
            x1, y1 = int(points[a, 0] * w), int(points[a, 1] * h)
            x2, y2 = int(points[b, 0] * w), int(points[b, 1] * h)
            if min(x1, y1, x2, y2) <= 0:
                continue
            strength = int(scores[a] * scores[b] * 255)
            # Float colour on purpose: cv2 rounds it, as it did for the release.
            hue = colorsys.hsv_to_rgb(ie / float(len(HAND_EDGES)), 1.0, 1.0)
            color = tuple(float(c) * strength for c in hue)
            cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=HAND_LINE_THICKNESS)
        for (px, py), s in zip(points, scores):
            if not _finite(px, py):
                continue
            x, y = int(px * w), int(py * h)
            if x <= 0 or y <= 0:
                continue
            cv2.circle(canvas, (x, y), HAND_JOINT_RADIUS, (0, 0, int(s * 255)), thickness=-1)
    return canvas


def _draw_face(canvas: np.ndarray, pose: Pose) -> np.ndarray:
    h, w = canvas.shape[:2]
    for n in range(pose.num_people):
        for (px, py), s in zip(pose.keypoints[n, FACE], pose.scores[n, FACE]):
            if not _finite(px, py):
                continue
            x, y = int(px * w), int(py * h)
            if x <= 0 or y <= 0:
                continue
            grey = int(s * 255)
            cv2.circle(canvas, (x, y), FACE_RADIUS, (grey, grey, grey), thickness=-1)
    return canvas


def canvas_size(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the big drawing canvas for an output of height x width: the release's
    2160-px short side, or SMALL_CANVAS_RATIO x the output below SMALL_OUTPUT."""
    short = min(height, width)
    if short < SMALL_OUTPUT:
        return height * SMALL_CANVAS_RATIO, width * SMALL_CANVAS_RATIO
    ratio = CANVAS_SHORT_SIDE / short if short != CANVAS_SHORT_SIDE else 1
    return int(height * ratio), int(width * ratio)


def draw_pose(pose: Pose, height: int, width: int) -> np.ndarray:
    """Pose -> (height, width, 3) uint8 RGB frame, as the model saw it in training."""
    rows, cols = canvas_size(height, width)
    canvas = np.zeros((rows, cols, 3), dtype=np.uint8)
    canvas = _draw_body(canvas, pose)
    canvas = _draw_hands(canvas, pose)
    canvas = _draw_face(canvas, pose)
    small = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
