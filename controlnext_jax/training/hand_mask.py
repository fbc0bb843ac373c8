"""The hand-region loss weight (docs/release_semantics.md, Training).

The release's data set draws every hand box of a frame (normalised corners, widened by a
10-pixel margin at the video's resolution) with 0.8 when the hand's mean keypoint score
is above 0.5 and 0 otherwise, on a zero canvas; boxes are *set*, not maxed, so a later
low-score box erases an earlier one where they overlap. The canvas is cropped with the
video, resized to the training size like the pose frames (bilinear with antialiasing),
mapped to 1 + 4 * canvas (4.2 inside confident hands, 1 elsewhere), and frame 0, the
reference, is set to 1. The loss then average-pools it to the latent size (`pool_to_latent`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from controlnext_jax.models.control_injection import adaptive_avg_pool2d

HAND_MARGIN = 10  # pixels at the video's resolution
HAND_SCORE_MIN = 0.5  # a hand counts when its mean keypoint score is above this
HAND_VALUE = 0.8  # what a counted hand draws on the canvas; the weight is 1 + 4 * canvas
HAND_GAIN = 4.0

Box = tuple[tuple[float, float], tuple[float, float]]  # ((x0, y0), (x1, y1)), normalised to [0, 1]


def draw_hand_canvas(boxes: Sequence[Sequence[Box]], scores: Sequence[Sequence[Sequence[float]]],
                     height: int, width: int, margin: int = HAND_MARGIN) -> np.ndarray:
    """Per frame, its hand boxes and per-hand keypoint scores -> float32 (F, height, width) canvas."""
    canvas = np.zeros((len(boxes), height, width), np.float32)
    for frame, (frame_boxes, frame_scores) in enumerate(zip(boxes, scores, strict=True)):
        for ((x0, y0), (x1, y1)), hand_scores in zip(frame_boxes, frame_scores, strict=True):
            value = HAND_VALUE if float(np.mean(hand_scores)) > HAND_SCORE_MIN else 0.0
            # truncated to pixels, then widened by the margin and clipped to the frame
            c0, r0 = max(int(x0 * width) - margin, 0), max(int(y0 * height) - margin, 0)
            c1, r1 = min(int(x1 * width) + margin, width), min(int(y1 * height) + margin, height)
            canvas[frame, r0:r1, c0:c1] = value
    return canvas


def region_weight(canvas: np.ndarray, size: tuple[int, int], gain: float) -> np.ndarray:
    """(F, h, w) canvas (already cropped like the video) -> float32 (F, *size) loss weight:
    antialiased bilinear resize (torchvision's Resize on tensors), 1 + gain * canvas, frame 0 = 1
    (frame 0 holds the reference image, which is never up-weighted)."""
    f = canvas.shape[0]
    resized = jax.image.resize(jnp.asarray(canvas, jnp.float32), (f, *size), method="linear", antialias=True)
    weight = np.array(1.0 + gain * resized, np.float32)
    weight[0] = 1.0
    return weight


def hand_weight(canvas: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The release's hand weight: `region_weight` with gain 4."""
    return region_weight(canvas, size, HAND_GAIN)


def pool_to_latent(weight: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """(b, f, H, W) pixel weight -> (b, f, h, w, 1) by torch's adaptive average pooling."""
    b, f, hgt, wid = weight.shape
    # (b, f, H, W) -> (b*f, H, W, 1) -> (b*f, h, w, 1) -> (b, f, h, w, 1)
    pooled = adaptive_avg_pool2d(weight.reshape(b * f, hgt, wid, 1).astype(jnp.float32), latent_hw)
    return pooled.reshape(b, f, *latent_hw, 1)
