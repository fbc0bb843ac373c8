"""The host-side table that drives the compiled window sampler (docs/sampling.md).

Everything that depends on the window layout (which frames each window reads, which pose
frames it is conditioned on, how its result is weighted) is computed here once, in
NumPy, and handed to the compiled program as index and weight arrays. The program then
runs the same code for every layout of the same shapes: no per-window Python, no
recompilation when only the fusion mode changes.

Windows are grouped `windows_per_call` at a time (one UNet call per group); the last
group is padded with dummy windows that read frames 0.. and carry weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnext_jax.sampling.fusion import frame_totals, window_weights
from controlnext_jax.sampling.windows import window_starts


@dataclass(frozen=True)
class WindowPlan:
    """Arrays of shape (groups, windows_per_call, batch_frames) plus the per-frame divisor.

    frame_index: latent frame each window slot reads and writes.
    pose_index: pose frame each slot is conditioned on (slot 0 -> frame 0, the reference pose).
    weight: fusion weight of each slot (0 for the skipped first slot of later windows and
        for padding windows).
    total: (num_frames,) sum of the weights reaching each frame; fused = sum(w * x) / total.
    """

    starts: tuple[int, ...]
    batch_frames: int
    num_frames: int
    frame_index: np.ndarray
    pose_index: np.ndarray
    weight: np.ndarray
    total: np.ndarray

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    @property
    def windows_per_call(self) -> int:
        return self.frame_index.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the compiled sampler takes (int32 indices, float32 weights)."""
        return {"frame_index": self.frame_index.astype(np.int32), "pose_index": self.pose_index.astype(np.int32),
                "weight": self.weight.astype(np.float32), "total": self.total.astype(np.float32)}


def plan_windows(num_frames: int, batch_frames: int, overlap: int, *, fusion: str = "uniform",
                 windows_per_call: int = 1) -> WindowPlan:
    """The window table for `num_frames` frames; `batch_frames` is clamped to `num_frames` first
    (as the release does), then windows start at `window_starts`."""
    if windows_per_call < 1:
        raise ValueError(f"windows_per_call={windows_per_call}: allowed range is >= 1")
    batch_frames = min(batch_frames, num_frames)
    starts = window_starts(num_frames, batch_frames, overlap)
    weights = window_weights(starts, batch_frames, fusion)
    total = frame_totals(starts, weights, num_frames)

    slots = np.arange(batch_frames)
    frame_index = np.asarray(starts)[:, None] + slots[None, :]
    # every window is anchored to the reference: its first pose slot shows pose frame 0
    pose_index = frame_index.copy()
    pose_index[:, 0] = 0

    # pad to whole groups with dummy windows (frames 0.., weight 0: they change nothing)
    groups = -(-len(starts) // windows_per_call)
    pad = groups * windows_per_call - len(starts)
    dummy = np.broadcast_to(slots, (pad, batch_frames))
    frame_index = np.concatenate([frame_index, dummy])
    pose_index = np.concatenate([pose_index, dummy])
    weights = np.concatenate([weights, np.zeros((pad, batch_frames))])

    shape = (groups, windows_per_call, batch_frames)
    return WindowPlan(tuple(starts), batch_frames, num_frames, frame_index.reshape(shape),
                      pose_index.reshape(shape), weights.reshape(shape), total)
