"""The animate pipeline against the torch reference of the release's sampler, same random weights.

Builds a random-weight release (diffusers-layout torch models + ControlNeXt file) from
`configs/model/<model>.yaml`, converts it with our converter, and runs the whole
sampling (reference encodings, windowed Euler steps with CFG, fusion, optionally the
chunked decode) in both: the JAX pipeline in quirks mode (so both compute the same thing)
and `controlnext_jax.testing.torch_sampler.release_sample` (plain Python window loop).
Prints time per denoising step and per output frame, the JAX compile time, the number
of compilations over two identical calls, and the latent error against torch.

    .venv/bin/python benchmarks/bench_animate.py --frames 24 --size 128 128 --steps 4 \
        --batch-frames 12 --overlap 4 [--model tiny] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch

from controlnext_jax.pipeline import load_pipeline
from controlnext_jax.sampling.windows import window_starts
from controlnext_jax.testing.parity_cases import rel_err
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release, release_sample


def timed(fn, repeats: int) -> tuple[np.ndarray, float, float]:
    """(output, first-call seconds, median seconds of the next `repeats` calls)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="configs/model/<name>.yaml (random weights)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"), help="pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-frames", type=int, default=12)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stacked", type=int, default=3, help="windows_per_call of the stacked JAX run")
    args = parser.parse_args()

    h, w = args.size
    frames = args.frames
    configs = model_configs(args.model)
    with tempfile.TemporaryDirectory(prefix="bench_animate-") as tmp:
        tmp = Path(tmp)
        models, converted = build_random_release(tmp, configs, seed=0)
        # a fresh persistent cache: the first call really compiles
        pipe = load_pipeline(converted, compilation_cache_dir=tmp / "jax_cache")

        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        poses = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
        factor = pipe.size_multiple
        latents = rng.standard_normal((1, frames, h // factor, w // factor, 4), dtype=np.float32)
        image_noise = rng.standard_normal((1, h, w, 3), dtype=np.float32)
        common = dict(num_inference_steps=args.steps, batch_frames=args.batch_frames, overlap=args.overlap)

        def jax_run(output_type: str, windows_per_call: int = 1):
            return lambda: pipe(image, poses, height=h, width=w, guidance_scale=args.guidance, latents=latents,
                                image_noise=image_noise, output_type=output_type, reference_quirks=True,
                                windows_per_call=windows_per_call, **common)

        def torch_run(output_type: str):
            return lambda: release_sample(models, configs["scheduler"], image, poses, latents=latents,
                                          image_noise=image_noise, min_guidance_scale=args.guidance,
                                          max_guidance_scale=args.guidance, output_type=output_type, **common)

        rows, compiles = [], []
        results = {}
        for name, fn, output_type in [
            ("torch eager, latents", torch_run("latent"), "latent"),
            ("JAX jit, latents, 1 window per call", jax_run("latent"), "latent"),
            (f"JAX jit, latents, {args.stacked} windows per call", jax_run("latent", args.stacked), "latent"),
            ("torch eager, decoded uint8 frames", torch_run("np"), "np"),
            ("JAX jit, decoded uint8 frames", jax_run("np"), "np"),
        ]:
            before = pipe.compile_count
            out, first, steady = timed(fn, args.repeats)
            results[name] = out
            if name.startswith("JAX"):
                # first call = trace + compile + run; calls 2.. reuse the compiled program
                compiles.append((name, first - steady, pipe.compile_count - before))
            rows.append((name, first, steady, steady / args.steps, steady / frames))

        num_windows = len(window_starts(frames, min(args.batch_frames, frames), args.overlap))
        print(f"model {args.model}, {frames} frames of {h}x{w}, {args.steps} steps, batch_frames "
              f"{args.batch_frames}, overlap {args.overlap} ({num_windows} windows), guidance {args.guidance} "
              f"(CFG batch 2), device {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}, "
              f"load average over the last 5 min {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores\n")
        print("| run | first call (s) | steady call (s) | per denoising step (s) | per output frame (s) |")
        print("|---|---:|---:|---:|---:|")
        for name, first, steady, per_step, per_frame in rows:
            print(f"| {name} | {first:.2f} | {steady:.3f} | {per_step:.4f} | {per_frame:.4f} |")
        print("\n| JAX program | compile time (s) | compilations over 1 + repeats identical calls |")
        print("|---|---:|---:|")
        for name, seconds, count in compiles:
            print(f"| {name} | {seconds:.1f} | {count} |")
        err_1 = rel_err(results["JAX jit, latents, 1 window per call"], results["torch eager, latents"])
        err_n = rel_err(results[f"JAX jit, latents, {args.stacked} windows per call"], results["torch eager, latents"])
        frames_diff = np.abs(results["JAX jit, decoded uint8 frames"].astype(int)
                             - results["torch eager, decoded uint8 frames"].astype(int))
        print(f"\nfinal latents vs torch: rel. error {err_1:.2e} (1 window per call), {err_n:.2e} "
              f"({args.stacked} per call); decoded uint8 frames: max |diff| {frames_diff.max()}, "
              f"{(frames_diff > 0).mean() * 100:.2f}% of values differ")
        print("per denoising step = steady call / steps (the latent rows: reference encodings + sampling); "
              "per output frame = steady call / frames")


if __name__ == "__main__":
    main()
