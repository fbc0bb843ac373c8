"""Training step time, samples per second and peak memory of a small configuration on this machine.

The tiny model (controlnext_jax/configs/model/tiny.yaml: every block type of the real one)
with random weights, the release's step (ControlNeXt module + whole UNet, AdamW, clipping),
on a fixed random batch: compile time apart, then the median of `--steps` timed steps
(each waits for its result). Peak memory is the process's peak resident set (CPU) or the
device's peak bytes in use (GPU, TPU). One row per (compute dtype, remat) setting, each
measured in its own process so that one setting's peak does not hide the next one's.

    python benchmarks/bench_train.py [--size 64] [--frames 3] [--batch 1] [--steps 10]
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=64, help="frame height and width (pixels)")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=["float32:none", "bfloat16:none", "bfloat16:both"],
                        help="compute_dtype:remat pairs")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)  # one setting, print its row
    args = parser.parse_args()
    if not args.row:
        import subprocess
        import sys

        header = None
        rows = []
        for setting in args.settings:
            argv = [sys.executable, __file__, "--row", "--settings", setting, "--model", args.model, "--size",
                    str(args.size), "--frames", str(args.frames), "--batch", str(args.batch), "--steps",
                    str(args.steps)]
            lines = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()
            header, row = lines[0], lines[-1]
            rows.append(row)
        print(header)
        print("| compute dtype | remat | compile (s) | step (s, median) | samples/s | peak memory (GiB) |")
        print("|---|---|---:|---:|---:|---:|")
        print("\n".join(rows))
        return

    from controlnext_jax.models.unet_blocks import set_remat
    from controlnext_jax.testing.torch_checkpoints import model_configs
    from controlnext_jax.training.models import init_training_models
    from controlnext_jax.training.run_log import peak_memory_bytes
    from controlnext_jax.training.step import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    shape = (args.batch, args.frames, args.size, args.size, 3)
    batch = {"frames": rng.uniform(-1, 1, shape).astype(np.float32),
             "poses": rng.uniform(0, 1, shape).astype(np.float32)}
    rows = []
    for setting in args.settings:
        dtype, remat = setting.split(":")
        models = init_training_models(model_configs(args.model), dtype, seed=0)
        set_remat(models["unet"], remat)
        trainer = Trainer(models, TrainConfig(compute_dtype=dtype))
        state = trainer.init_state()
        device_batch = trainer.put_batch(batch)
        started = time.perf_counter()
        state, metrics = trainer.step(state, trainer.frozen, device_batch, jax.random.key(0))
        jax.block_until_ready(metrics["loss"])
        compile_s = time.perf_counter() - started
        times = []
        for i in range(args.steps):
            started = time.perf_counter()
            state, metrics = trainer.step(state, trainer.frozen, device_batch, jax.random.key(i + 1))
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - started)
        memory, where = peak_memory_bytes()
        step_s = float(np.median(times))
        rows.append((dtype, remat, compile_s, step_s, args.batch / step_s, memory / 2**30, where))

    print(f"{args.model} model, {args.batch} x {args.frames} frames of {args.size}x{args.size}, "
          f"{jax.devices()[0].device_kind} ({jax.device_count()} device), {platform.processor() or platform.machine()}, "
          f"jax {jax.__version__}")
    for dtype, remat, compile_s, step_s, rate, memory, where in rows:
        print(f"| {dtype} | {remat} | {compile_s:.1f} | {step_s:.3f} | {rate:.2f} | {memory:.2f} ({where}) |")


if __name__ == "__main__":
    main()
