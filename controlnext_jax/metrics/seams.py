"""Do the sampler's window seams show? Frame-to-frame change at window boundaries vs inside.

The sampler denoises overlapping windows (`controlnext_jax.sampling.windows`) and averages
them: the first window adds all its frames, later windows all but their first (that
frame carries the reference pose). A frame's value therefore comes from a set of windows,
and a *boundary transition* i -> i+1 is one where that set changes (a window enters or
leaves). If fusion is imperfect, the change between frames jumps exactly there.

Statistic: d_i = mean |frame[i+1] - frame[i]| over pixels and channels, on [0, 1].
seam ratio = mean d over boundary transitions / mean d over the other transitions
(1.0 = seams do not show; the same positions on the ground truth give the natural
baseline). The local ratio divides each boundary's d by the median of the interior
transitions within `radius` frames, which discounts slow changes of motion speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnext_jax.sampling.windows import window_starts


def frame_changes(video: np.ndarray) -> np.ndarray:
    """(t, h, w, c) uint8 -> (t-1,) mean absolute change between consecutive frames on [0, 1]."""
    v = np.asarray(video)
    if v.ndim != 4 or len(v) < 2:
        raise ValueError(f"video must be (frames >= 2, h, w, c), got {v.shape}")
    # exact integer differences (int16 holds -255..255), averaged in float64
    return np.abs(np.diff(v.astype(np.int16), axis=0)).mean(axis=(1, 2, 3), dtype=np.float64) / 255.0


def contributing_windows(num_frames: int, batch_frames: int, overlap: int) -> list[frozenset[int]]:
    """For each frame, the indices of the windows whose output is averaged into it."""
    starts = window_starts(num_frames, batch_frames, overlap)
    length = min(batch_frames, num_frames)
    sets: list[set[int]] = [set() for _ in range(num_frames)]
    for k, start in enumerate(starts):
        for frame in range(start + (k > 0), start + length):
            sets[frame].add(k)
    return [frozenset(s) for s in sets]


def boundary_transitions(num_frames: int, batch_frames: int, overlap: int) -> list[int]:
    """Transitions i (frame i -> i+1) where the set of contributing windows changes."""
    sets = contributing_windows(num_frames, batch_frames, overlap)
    return [i for i in range(num_frames - 1) if sets[i] != sets[i + 1]]


@dataclass(frozen=True)
class SeamStats:
    boundary_mean: float
    interior_mean: float
    ratio: float  # boundary_mean / interior_mean
    local_ratio: float  # mean over boundaries of d_b / median of nearby interior d
    num_boundaries: int
    num_interior: int


def _split(changes: np.ndarray, boundaries: list[int], first_transition: int, radius: int):
    """One clip's boundary changes, interior changes and local ratios."""
    changes = np.asarray(changes, np.float64)
    index = np.arange(len(changes))
    considered = index >= first_transition
    is_boundary = np.isin(index, boundaries) & considered
    interior = considered & ~is_boundary
    local = []
    for b in index[is_boundary]:
        near = interior & (np.abs(index - b) <= radius)
        if near.any() and np.median(changes[near]) > 0:
            local.append(changes[b] / np.median(changes[near]))
    return changes[is_boundary], changes[interior], local


def seam_stats(clips: list[tuple[np.ndarray, list[int]]], first_transition: int = 0, radius: int = 4) -> SeamStats:
    """Seam statistics over clips given as (frame_changes, boundary_transitions), boundary and
    interior transitions pooled over clips. Only transitions from `first_transition` on count
    (1 skips the jump from a leading reference-pose frame to the first driving frame)."""
    boundary, interior, local = [], [], []
    for changes, boundaries in clips:
        b, i, loc = _split(changes, boundaries, first_transition, radius)
        boundary.extend(b)
        interior.extend(i)
        local.extend(loc)
    if not boundary or not interior:
        nan = float("nan")
        return SeamStats(nan, nan, nan, nan, len(boundary), len(interior))
    b_mean, i_mean = float(np.mean(boundary)), float(np.mean(interior))
    return SeamStats(b_mean, i_mean, b_mean / i_mean if i_mean > 0 else float("inf"),
                     float(np.mean(local)) if local else float("nan"), len(boundary), len(interior))
