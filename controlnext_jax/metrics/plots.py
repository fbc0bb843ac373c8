"""PNG plots for the report. Each function draws one figure from plain arrays, titles it with
what it shows, stores the title in the PNG's `Title` text chunk and returns the figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": title})
    plt.close(fig)


def plot_seams(per_clip: dict[str, dict], batch_frames: int, overlap: int, path: Path, max_clips: int = 4):
    """Frame-to-frame change over frame index, one panel per clip, window boundaries marked."""
    clips = list(per_clip.items())[:max_clips]
    fig, axes = plt.subplots(len(clips), 1, figsize=(10, 2.6 * len(clips)), squeeze=False)
    for ax, (clip_id, c) in zip(axes[:, 0], clips):
        ax.plot(np.arange(len(c["changes"])) + 0.5, c["changes"], color="C0", label="generated")
        if len(c["gt_changes"]):
            # ground-truth transition j shows the same moment as generated transition j + first
            ax.plot(np.arange(len(c["gt_changes"])) + c["first_transition"] + 0.5, c["gt_changes"], color="0.6",
                    label="ground truth")
        for k, start in enumerate(c["window_starts"]):
            ax.axvspan(start, start + min(batch_frames, len(c["changes"]) + 1) - 1, color=f"C{k % 2 + 1}",
                       alpha=0.08)
        for i, b in enumerate(c["boundaries"]):
            ax.axvline(b + 0.5, color="C3", linestyle="--", linewidth=1, label="window boundary" if i == 0 else None)
        ax.set_title(f"clip {clip_id}")
        ax.set_xlabel("frame index (change i -> i+1 drawn at i + 0.5)")
        ax.set_ylabel("mean |change| (0..1)")
        ax.legend(loc="upper right", fontsize=8)
    title = f"Frame-to-frame change and window boundaries (batch_frames {batch_frames}, overlap {overlap})"
    _save(fig, path, title)
    return fig


def plot_per_frame(curves: dict[str, dict[str, np.ndarray]], metrics: list[tuple[str, str]], path: Path,
                   title: str):
    """One panel per metric, one line per clip, over the aligned frame index.
    `metrics`: (key in each clip's dict, axis label)."""
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 2.6 * len(metrics)), squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], metrics):
        for clip_id, c in curves.items():
            ax.plot(np.arange(len(c[key])), c[key], label=clip_id)
        ax.set_ylabel(label)
        ax.set_xlabel("aligned frame index")
        if len(curves) <= 10:
            ax.legend(loc="best", fontsize=7)
    _save(fig, path, title)
    return fig
