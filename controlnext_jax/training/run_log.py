"""What a training run reports: metrics.jsonl in the run folder, wandb, a progress bar.

Metrics are fetched from the devices only every `every` steps (fetching each step would
stall the dispatch of the next one), as the mean over the steps since the last record:
loss, gradient norm, learning rate, seconds per step and samples per second (the first
step, which compiles, is reported apart as `compile_s`), and peak memory: the device's
`peak_bytes_in_use` where the runtime reports it (GPU, TPU), the process's peak resident
memory otherwise (CPU). metrics.jsonl is appended, one JSON object per record, so a
resumed run continues the same file; it is what the loss curve is drawn from.

wandb runs offline (files under <out>/wandb, `wandb sync` uploads them later) unless
`log.wandb=online`, or `auto` with WANDB_API_KEY set; a resumed run continues the same
wandb run (its id is kept in <out>/wandb_id).
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

# scalar parts of the loss some objectives report beside it (training/vae_loss.py), averaged like it
EXTRA_METRICS = ("l1", "kl", "latent_std")


def wandb_mode(setting: str) -> str:
    if setting == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return setting


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, what they measure)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host"


class RunLog:
    def __init__(self, out: Path, *, record: dict, every: int, total_steps: int, start_step: int,
                 samples_per_step: int, wandb_setting: str = "offline", project: str = "controlnext-jax",
                 progress: bool = True, learning_rate=None):
        self.out, self.every, self.samples_per_step = Path(out), every, samples_per_step
        self.learning_rate = learning_rate  # optimizer update count -> learning rate
        self.primary = jax.process_index() == 0
        self._pending: list[dict] = []
        self._last_time = None
        self._last_step = start_step
        self.compile_s = None
        self._wandb = None
        if self.primary and wandb_mode(wandb_setting) != "disabled":
            self._wandb = self._start_wandb(record, wandb_mode(wandb_setting), project)
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", desc="train",
                         disable=not (progress and self.primary), dynamic_ncols=True)

    def _start_wandb(self, record: dict, mode: str, project: str):
        import wandb

        id_file = self.out / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
        id_file.write_text(run_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project=project, dir=str(self.out), id=run_id, resume="allow", mode=mode,
                          config=record.get("config", {}))

    def step_started(self) -> None:
        if self._last_time is None:
            self._last_time = time.perf_counter()

    def step_done(self, step: int, metrics: dict, *, updates) -> None:
        """After step `step` (1-based count of steps done); `metrics` still on the devices."""
        extra = {k: metrics[k] for k in EXTRA_METRICS if k in metrics}
        self._pending.append({"loss": metrics["loss"], "grad_norm": metrics["grad_norm"], "updates": updates,
                              **extra})
        self._bar.update(1)
        if self.compile_s is None:  # the first step of this process compiles: time it apart
            jax.block_until_ready(metrics["loss"])
            now = time.perf_counter()
            self.compile_s = now - self._last_time
            self._last_time, self._last_step = now, step
            self._write({"step": step, "compile_s": round(self.compile_s, 3), **self._fetch()})
            return
        if step % self.every == 0:
            jax.block_until_ready(metrics["loss"])
            now = time.perf_counter()
            seconds = (now - self._last_time) / max(step - self._last_step, 1)
            self._last_time, self._last_step = now, step
            self._write({"step": step, **self._fetch(), "step_s": round(seconds, 4),
                         "samples_per_s": round(self.samples_per_step / seconds, 4)})

    def _fetch(self) -> dict:
        pending, self._pending = self._pending, []
        loss = float(np.mean([float(p["loss"]) for p in pending]))
        grad_norm = float(np.mean([float(p["grad_norm"]) for p in pending]))
        updates = int(pending[-1]["updates"])
        memory, where = peak_memory_bytes()
        row = {"loss": loss, "grad_norm": grad_norm, "updates": updates,
               **{k: float(np.mean([float(p[k]) for p in pending])) for k in EXTRA_METRICS if k in pending[-1]},
               f"peak_{where}_memory_gib": round(memory / 2**30, 3)}
        if self.learning_rate is not None:
            row["learning_rate"] = float(self.learning_rate(updates))
        self._bar.set_postfix(loss=f"{loss:.4g}")
        return row

    def _write(self, row: dict) -> None:
        if not self.primary:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def note(self, row: dict) -> None:
        """A non-metric record (a validation video, a checkpoint, the export)."""
        self._write(row)

    def message(self, text: str) -> None:
        if self.primary:
            self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
