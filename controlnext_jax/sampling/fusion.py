"""How the overlapping windows of one denoising step are fused into one video (docs/sampling.md).

Every window of a step produces Euler-stepped latents for its `batch_frames` frames; a
frame covered by several windows gets the weighted mean of their values. The weights
depend only on the window layout, so they are computed here once per shape on the host
(NumPy) and the compiled sampler does a single weighted scatter-add.

Common rule of every mode: a later window's first frame carried the *reference* pose
(the release replaces it, so each window is anchored to the reference), so that slot
does not describe its own frame and gets weight 0. Window 0's first frame is frame 0,
whose pose is the reference pose, so it counts.

Modes (each window's weights over its `batch_frames` slots):

- `uniform`: 1 on every contributing slot; the mean is the release's sum / count.
- `triangular`: a tent over the window's contributing slots, highest in the middle and
  falling towards both edges (never to 0: `(k + 0.5) * 2 / n` mirrored, as MimicMotion
  weights its tiles), so overlapping windows hand over gradually everywhere.
- `overlap_linear`: weight 1 except inside the overlap with a neighbouring window, where
  the two cross-fade linearly (the earlier window falls, the later one rises, the pair
  summing to 1); frames outside any overlap keep their single window's value.
"""

from __future__ import annotations

import numpy as np

FUSION_MODES = ("uniform", "triangular", "overlap_linear")


def contributing_span(start: int, first: bool, batch_frames: int) -> tuple[int, int]:
    """First and last frame (inclusive) a window adds to the fused video."""
    return (start if first else start + 1), start + batch_frames - 1


def _tent(n: int) -> np.ndarray:
    """n positive weights, symmetric, peaking in the middle: min(k + 0.5, n - k - 0.5) * 2 / n."""
    k = np.arange(n, dtype=np.float64) + 0.5
    return np.minimum(k, n - k) * 2.0 / n


def window_weights(starts: list[int], batch_frames: int, mode: str) -> np.ndarray:
    """(num_windows, batch_frames) float64 un-normalised weights of every window slot."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion={mode!r}: allowed: {list(FUSION_MODES)}")
    n = len(starts)
    spans = [contributing_span(s, i == 0, batch_frames) for i, s in enumerate(starts)]
    weights = np.zeros((n, batch_frames), np.float64)
    for i, (start, (lo, hi)) in enumerate(zip(starts, spans)):
        slots = np.arange(lo - start, hi - start + 1)
        if mode == "uniform":
            weights[i, slots] = 1.0
        elif mode == "triangular":
            weights[i, slots] = _tent(len(slots))
        else:
            w = np.ones(len(slots))
            frames = np.arange(lo, hi + 1)
            if i > 0:  # rising ramp over the frames shared with the previous window
                prev_hi = spans[i - 1][1]
                m = prev_hi - lo + 1
                inside = frames <= prev_hi
                w[inside] *= (frames[inside] - lo + 1) / (m + 1)
            if i < n - 1:  # falling ramp over the frames shared with the next window
                next_lo = spans[i + 1][0]
                m = hi - next_lo + 1
                inside = frames >= next_lo
                w[inside] *= (hi - frames[inside] + 1) / (m + 1)
            weights[i, slots] = w
    return weights


def frame_totals(starts: list[int], weights: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) sum of the weights that reach each frame (the fusion's divisor)."""
    totals = np.zeros(num_frames, np.float64)
    batch_frames = weights.shape[1]
    for start, w in zip(starts, weights):
        totals[start:start + batch_frames] += w
    if not np.all(totals > 0):
        missing = np.flatnonzero(totals <= 0).tolist()
        raise ValueError(f"window layout leaves frames {missing[:8]} without a contributing window")
    return totals


def normalized_weights(starts: list[int], batch_frames: int, num_frames: int, mode: str) -> np.ndarray:
    """(num_windows, batch_frames) weights divided by their frame's total: per frame they sum to 1."""
    weights = window_weights(starts, batch_frames, mode)
    totals = frame_totals(starts, weights, num_frames)
    frames = np.asarray(starts)[:, None] + np.arange(batch_frames)[None, :]
    return weights / totals[frames]
