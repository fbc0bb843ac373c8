"""Contact sheets: frames laid out in a grid, for looking at what a report's numbers measure.

`frame_grid` lays out rows of equally sized frames with white gaps. `comparison_sheet` shows,
for the first clips of an eval-layout data set, the ground truth beside each method's frames at
the same moments (the evaluation's frame alignment), so a row of a comparison table can be
checked by eye.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from controlnext_jax.metrics.dataset import Alignment, align_clip, discover
from controlnext_jax.pose.media import load_image, read_video
from controlnext_jax.pose.video import prepare_reference

GAP = 2  # white pixels between frames and between rows


def frame_grid(rows: Sequence[Sequence[np.ndarray | None]], gap: int = GAP) -> np.ndarray:
    """(H, W, 3) uint8: row i holds rows[i]'s frames left to right; None leaves a white cell.
    Every frame has the same (h, w, 3) shape."""
    frames = [f for row in rows for f in row if f is not None]
    if not frames:
        raise ValueError("frame_grid: no frames")
    h, w = frames[0].shape[:2]
    if any(f.shape != (h, w, 3) for f in frames):
        raise ValueError(f"frame_grid: frames must all be ({h}, {w}, 3)")
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row):
            if frame is not None:
                sheet[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = frame
    return sheet


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """min(k, n) distinct indices into range(n), first and last included when k >= 2."""
    if n <= 0 or k <= 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def comparison_sheet(dataset: str | Path, videos: Mapping[str, Path], alignment: Alignment, *,
                     clips: int = 3, frames: int = 6) -> np.ndarray:
    """Per clip (the first `clips` by name): a row of the ground truth, then one row per method
    (`videos[method]/<clip_id>.mp4`), at `frames` evenly spaced aligned moments. The ground-truth
    row starts with the reference image (prepared as the pipeline prepares it); the method rows
    leave that cell white."""
    rows = []
    for clip in discover(dataset, max_clips=clips):
        aligned = {m: align_clip(clip, read_video(Path(folder) / f"{clip.clip_id}.mp4"), alignment)
                   for m, folder in videos.items()}
        first = next(iter(aligned.values()))
        h, w = first.generated.shape[1:3]
        pick = evenly_spaced(min(len(a.ground_truth) for a in aligned.values()), frames)
        rows.append([prepare_reference(load_image(clip.reference, param="dataset"), h, w),
                     *first.ground_truth[pick]])
        rows += [[None, *a.generated_aligned[pick]] for a in aligned.values()]
    return frame_grid(rows)
