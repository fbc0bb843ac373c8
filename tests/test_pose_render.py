"""The renderer against an independent drawing written from the DWPose description.

`reference_drawing` below is written from the drawing paragraph of docs/release_semantics.md (not from
the library's renderer, which it never calls): 2160-px short side, 17 limbs as
ellipse polygons coloured by limb colour x both confidences, canvas x 0.6, joint
circles, hand lines / red joints, grey face dots, shrink with INTER_LINEAR, BGR->RGB.
"""

import colorsys
import math

import cv2
import numpy as np
import pytest

from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.types import Pose

# The OpenPose limb table as 1-based joint pairs and the 18 colours, as published.
LIMB_PAIRS_1BASED = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10],
                     [10, 11], [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17],
                     [1, 16], [16, 18]]
PALETTE = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0],
           [85, 255, 0], [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255],
           [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], [170, 0, 255],
           [255, 0, 255], [255, 0, 170], [255, 0, 85]]
FINGER_BONES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9],
                [9, 10], [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16], [0, 17],
                [17, 18], [18, 19], [19, 20]]


def reference_drawing(kp, sc, H, W):
    """kp (N, 134, 2), sc (N, 134) -> (H, W, 3) RGB."""
    s = 2160 / min(H, W)
    big = np.zeros((int(H * s), int(W * s), 3), np.uint8)
    bh, bw = big.shape[:2]
    n_people = kp.shape[0]

    ops = []  # limbs: limb-major, person-minor
    for li, (j1, j2) in enumerate(LIMB_PAIRS_1BASED):
        for p in range(n_people):
            c1, c2 = sc[p, j1 - 1], sc[p, j2 - 1]
            if min(c1, c2) < 0.3:
                continue
            px = [kp[p, j1 - 1, 0] * bw, kp[p, j2 - 1, 0] * bw]
            py = [kp[p, j1 - 1, 1] * bh, kp[p, j2 - 1, 1] * bh]
            dist = math.sqrt((py[0] - py[1]) ** 2 + (px[0] - px[1]) ** 2)
            ang = math.degrees(math.atan2(py[0] - py[1], px[0] - px[1]))
            poly = cv2.ellipse2Poly((int((px[0] + px[1]) / 2), int((py[0] + py[1]) / 2)),
                                    (int(dist / 2), 4), int(ang), 0, 360, 1)
            ops.append((poly, [int(v * c1 * c2) for v in PALETTE[li]]))
    for poly, color in ops:
        cv2.fillConvexPoly(big, poly, color)
    big = (big.astype(np.float64) * 0.6).astype(np.uint8)

    for j in range(18):
        for p in range(n_people):
            if sc[p, j] > 0.3:
                cv2.circle(big, (int(kp[p, j, 0] * bw), int(kp[p, j, 1] * bh)), 4,
                           [int(v * sc[p, j]) for v in PALETTE[j]], -1)

    for start in (92, 113):  # every person's left hand, then every right hand
        for p in range(n_people):
            hk, hs = kp[p, start:start + 21], sc[p, start:start + 21]
            for bi, (a, b) in enumerate(FINGER_BONES):
                pa = (int(hk[a, 0] * bw), int(hk[a, 1] * bh))
                pb = (int(hk[b, 0] * bw), int(hk[b, 1] * bh))
                if min(pa + pb) > 0:
                    rgb = colorsys.hsv_to_rgb(bi / 20.0, 1.0, 1.0)
                    k = int(hs[a] * hs[b] * 255)
                    cv2.line(big, pa, pb, [v * k for v in rgb], 2)
            for q in range(21):
                pq = (int(hk[q, 0] * bw), int(hk[q, 1] * bh))
                if min(pq) > 0:
                    cv2.circle(big, pq, 4, (0, 0, int(hs[q] * 255)), -1)

    for p in range(n_people):
        for q in range(24, 92):
            pq = (int(kp[p, q, 0] * bw), int(kp[p, q, 1] * bh))
            if min(pq) > 0:
                g = int(sc[p, q] * 255)
                cv2.circle(big, pq, 3, (g, g, g), -1)

    small = cv2.resize(big, (W, H), interpolation=cv2.INTER_LINEAR)
    return small[:, :, ::-1]


def fixed_people():
    """Two people in fixed, overlapping places, with every kind of score case."""
    rng = np.random.default_rng(1234)
    people_kp, people_sc = [], []
    for shift in (0.0, 0.12):
        kp = np.zeros((134, 2))
        body = np.array([[0.50, 0.15], [0.50, 0.25], [0.40, 0.25], [0.36, 0.40], [0.34, 0.55],
                         [0.60, 0.25], [0.64, 0.40], [0.66, 0.55], [0.44, 0.55], [0.43, 0.72],
                         [0.42, 0.90], [0.56, 0.55], [0.57, 0.72], [0.58, 0.90], [0.47, 0.13],
                         [0.53, 0.13], [0.45, 0.14], [0.55, 0.14]])
        kp[:18] = body + [shift, 0.01 * shift]
        kp[18:24] = rng.uniform(0.3, 0.95, (6, 2))
        kp[24:92] = [0.5 + shift, 0.15] + rng.normal(0, 0.025, (68, 2))
        kp[92:113] = kp[7] + rng.normal(0, 0.02, (21, 2))
        kp[113:134] = kp[4] + rng.normal(0, 0.02, (21, 2))
        sc = rng.uniform(0.35, 1.0, 134)
        sc[1] = 1.0  # the neck's score is 0 or 1
        sc[[9, 16]] = [0.2, 0.3]  # a knee below threshold; an ear exactly on it
        sc[100:104] = 0.05  # faint finger
        people_kp.append(kp)
        people_sc.append(sc)
    kp, sc = np.stack(people_kp), np.stack(people_sc)
    # person 1's left hand over person 0's right hand: the drawing order shows
    kp[1, 92:113] = kp[0, 113:134] + [0.004, 0.003]
    kp[1, 30] = [-0.01, 0.2]  # face point left of the image: skipped
    kp[1, 120] = [0.3, 0.0]  # hand point on the top edge: skipped
    kp[0, 4] = [1.02, 0.5]  # a wrist outside the frame: drawn, clipped
    return kp, sc


@pytest.mark.parametrize("hw", [(1024, 576), (301, 300)])
def test_matches_independent_drawing_pixel_for_pixel(hw):
    kp, sc = fixed_people()
    ours = draw_pose(Pose(kp, sc), *hw)
    theirs = reference_drawing(kp, sc, *hw)
    assert ours.shape == (*hw, 3) and ours.dtype == np.uint8
    assert (ours > 0).mean() > 0.01  # something was drawn
    np.testing.assert_array_equal(ours, theirs)


def test_colours_are_channel_swapped_dimmed_and_confidence_scaled():
    # Short side 2160: the canvas is not resized, so pixels can be read exactly.
    H, W = 2400, 2160
    kp = np.full((1, 134, 2), -1.0)
    sc = np.zeros((1, 134))
    kp[0, 0], sc[0, 0] = [0.5, 0.2], 0.5  # nose, joint colour (255, 0, 0) "BGR"
    kp[0, 1], sc[0, 1] = [0.5, 0.4], 1.0  # neck; limb 12 neck-nose colour (0, 0, 255)
    img = draw_pose(Pose(kp, sc), H, W)
    nose = img[int(0.2 * H), int(0.5 * W)]
    assert tuple(nose) == (0, 0, int(255 * 0.5))  # swapped: blue in the RGB result
    mid = img[int(0.3 * H), int(0.5 * W)]
    # limb drawn at 255 * 0.5 * 1.0 = 127 on channel 2 ("red"), then x 0.6 -> 76, shown as R
    assert tuple(mid) == (int(127 * 0.6), 0, 0)
    neck = img[int(0.4 * H), int(0.5 * W)]
    assert tuple(neck) == (0, 85, 255)  # joint 1 colour (255, 85, 0) at score 1, swapped


def test_faint_and_missing_points():
    H, W = 64, 64
    empty = draw_pose(Pose.empty(), H, W)
    assert empty.shape == (H, W, 3) and not empty.any()
    kp = np.full((1, 134, 2), np.nan)  # nothing produced: nothing drawn, no error
    sc = np.ones((1, 134))
    assert not draw_pose(Pose(kp, sc), H, W).any()


def test_opencv_is_the_series_that_drew_the_training_poses():
    # OpenCV 4.11 and later (5.0 included) rasterise lines that cross the image border
    # differently from 4.10 (checked primitive by primitive against 4.10.0.84); the
    # release drew its training poses with 4.10, so the project pins that series.
    major, minor = (int(v) for v in cv2.__version__.split(".")[:2])
    assert (major, minor) == (4, 10), cv2.__version__


def test_small_outputs_draw_unbroken_limbs():
    """Below 256 px the canvas is 4x the output (controlnext_jax/pose/render.py, SMALL_OUTPUT): a
    limb is an unbroken stroke about 2 px wide. With the release's 2160-px canvas at this size
    INTER_LINEAR's taps miss most of the stroke and it breaks into dashes."""
    kp = np.full((1, 134, 2), np.nan)
    sc = np.zeros((1, 134))
    kp[0, 2], kp[0, 3] = [0.2, 0.41], [0.8, 0.47]  # right shoulder -> right elbow, slightly sloped
    sc[0, [2, 3]] = 1.0
    img = draw_pose(Pose(kp, sc), 128, 96)
    lit = img.max(axis=2) > 20
    columns = range(int(0.25 * 96), int(0.75 * 96))
    assert all(lit[:, x].any() for x in columns)  # no gap along the limb
    widths = [lit[:, x].sum() for x in columns]
    assert 1 <= np.median(widths) <= 4
