"""Where the temporal windows of the sampler start (docs/release_semantics.md, Sampling step 5).

Each denoising step runs the UNet on windows of `batch_frames` frames that overlap by
`overlap` frames: starts `range(0, num_frames - overlap, batch_frames - overlap)`, a start
past `num_frames - batch_frames` clamped to it (so the last window ends at the last frame);
`batch_frames` is first clamped to `num_frames` (then one window covers everything).
Shared by the sampler and the seam metric.
"""

from __future__ import annotations


def window_starts(num_frames: int, batch_frames: int, overlap: int) -> list[int]:
    """Start frame of every window, in sampling order (the clamping may repeat a start)."""
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: must be >= 1")
    if batch_frames < 1:
        raise ValueError(f"batch_frames={batch_frames}: must be >= 1")
    if batch_frames >= num_frames:
        # One window holds every frame. (The original's range would go negative here when
        # num_frames <= overlap; a single window is what it means.)
        return [0]
    if not 0 <= overlap < batch_frames:
        raise ValueError(f"overlap={overlap}: must be in [0, batch_frames={batch_frames})")
    last = num_frames - batch_frames
    return [min(start, last) for start in range(0, num_frames - overlap, batch_frames - overlap)]
