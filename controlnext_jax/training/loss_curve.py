"""A training run's loss curve as a PNG, from the run folder's metrics.jsonl (training/run_log.py).

One panel per training stage (e.g. the embedded model's VAE run and its diffusion run), the
logged loss (each point the mean over `log.every` steps) with a moving average over the
points, so that a model card shows how each stage learned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from controlnext_jax.errors import UserError  # noqa: E402


def read_losses(run: str | Path, key: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` in <run>/metrics.jsonl, in step order; a resumed run's repeated
    steps keep their last record. The first record of each (re)start, the one with `compile_s`,
    holds a single step's value where the others hold means over `log.every` steps: it is left
    out unless the run has nothing else."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no such file (not a controlnext-train run folder)")
    rows, single = {}, {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if key in row and "step" in row:
            (single if "compile_s" in row else rows)[int(row["step"])] = float(row[key])
    rows = rows or single
    if not rows:
        raise UserError(f"{path}: no {key!r} records")
    steps = np.array(sorted(rows))
    return steps, np.array([rows[s] for s in steps])


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over `window` points centred on each one (fewer at the ends): a trailing mean would
    lag the logged curve and sit above it while the loss falls."""
    before = (window - 1) // 2
    after = window - 1 - before
    return np.array([values[max(0, i - before):i + after + 1].mean() for i in range(len(values))])


def plot_loss_curves(runs: Sequence[tuple[str, str | Path, str]], out: str | Path, *, smooth: int = 10) -> Path:
    """runs: (title, run folder, metric key) per panel -> the PNG at `out`."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.6), squeeze=False)
    for ax, (title, run, key) in zip(axes[0], runs):
        steps, values = read_losses(run, key)
        ax.plot(steps, values, color="0.75", linewidth=0.8, label=f"{key} (logged)")
        ax.plot(steps, moving_average(values, smooth), color="C0", label=f"centred moving average ({smooth} points)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100, metadata={"Title": "training loss"})
    plt.close(fig)
    return out
