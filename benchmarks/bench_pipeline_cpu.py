"""The whole animate pipeline on CPU against the release-equivalent PyTorch pipeline, alternating.

A small random-weight release (configs/model/<model>.yaml, diffusers layout + ControlNeXt file,
converted with our converter: `build_random_release`) runs the same request in both: the JAX
pipeline in quirks mode and `controlnext_jax.testing.torch_sampler.release_sample` (the
release's loop), decoded uint8 frames out, same weights and noise. Rounds alternate torch and
JAX (order flipped every round); the first round (JAX compilation) is excluded; the figure is
the median over rounds of JAX time / the same round's torch time.

`--before` times the forward as it was before the CPU lowering defaults (lax.conv and
`jax.nn.dot_product_attention` everywhere); combine it with `CONTROLNEXT_JAX_XLA_DEFAULTS=0`
to also drop the package's XLA flags.

`--roofline` adds the release loop's product FLOPs (matrix products, convolutions and
attention, counted by torch's `FlopCounterMode` over one whole request: CLIP, VAE encode, all
UNet and ControlNeXt calls, decode), the rate each side reached, and what `--target` (a ratio to
torch's time) asks of the machine's dense matmul rate (`roofline.py`).

    .venv/bin/python benchmarks/bench_pipeline_cpu.py --frames 8 --size 64 64 --steps 2 --rounds 3
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
from roofline import TARGET_HEADER, dense_matmul_rates, product_flops, rates_line, target_cells

from controlnext_jax.models import attention, layers
from controlnext_jax.pipeline import load_pipeline
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release, release_sample


def use_xla_lowering() -> None:
    """Class-wide default "xla" for every convolution and attention traced from now on."""
    layers.TorchConv.lowering = "xla"
    attend = attention.attend
    attention.attend = lambda q, k, v, implementation=None: attend(q, k, v, implementation or "xla")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="configs/model/<name>.yaml (random weights)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"), help="pixels")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-frames", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--roofline", action="store_true",
                        help="product FLOPs, reached GFLOP/s and what --target asks against the dense matmul rate")
    parser.add_argument("--target", type=float, default=0.5, help="ratio to torch's time asked (with --roofline)")
    parser.add_argument("--before", action="store_true", help="lax.conv + dot_product_attention everywhere")
    args = parser.parse_args()
    if args.before:
        use_xla_lowering()

    h, w = args.size
    configs = model_configs(args.model)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_cpu-") as tmp:
        tmp = Path(tmp)
        models, converted = build_random_release(tmp, configs, seed=0)
        pipe = load_pipeline(converted, compilation_cache_dir=tmp / "jax_cache")
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        poses = rng.integers(0, 256, (args.frames, h, w, 3), dtype=np.uint8)
        latents = rng.standard_normal((1, args.frames, h // pipe.size_multiple, w // pipe.size_multiple, 4),
                                      dtype=np.float32)
        image_noise = rng.standard_normal((1, h, w, 3), dtype=np.float32)
        common = dict(num_inference_steps=args.steps, batch_frames=args.batch_frames, overlap=args.overlap)
        runs = {
            "torch": lambda: release_sample(models, configs["scheduler"], image, poses, latents=latents,
                                            image_noise=image_noise, min_guidance_scale=args.guidance,
                                            max_guidance_scale=args.guidance, output_type="np", **common),
            "jax": lambda: np.asarray(pipe(image, poses, height=h, width=w, guidance_scale=args.guidance,
                                           latents=latents, image_noise=image_noise, output_type="np",
                                           reference_quirks=True, **common)),
        }
        times = {name: [] for name in runs}
        outputs = {}
        for r in range(args.rounds + 1):
            for name in (list(runs) if r % 2 else list(runs)[::-1]):
                start = time.perf_counter()
                outputs[name] = runs[name]()
                if r:
                    times[name].append(time.perf_counter() - start)
        ratios = [a / b for a, b in zip(times["jax"], times["torch"])]
        diff = np.abs(outputs["jax"].astype(int) - outputs["torch"].astype(int))
        print(f"pipeline {args.model}, {args.frames} frames of {h}x{w}, {args.steps} steps, batch_frames "
              f"{args.batch_frames}, overlap {args.overlap}, guidance {args.guidance}, decoded uint8 frames; "
              f"{'before (lax.conv + dot_product_attention)' if args.before else 'package defaults'}; "
              f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; jax {jax.__version__}, torch {torch.__version__}, "
              f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores\n")
        print("| run | median time (s) | median ratio to torch | ratio range |")
        print("|---|---:|---:|---:|")
        print(f"| torch eager (release loop) | {statistics.median(times['torch']):.2f} | 1 | - |")
        print(f"| JAX jit (pipeline) | {statistics.median(times['jax']):.2f} | {statistics.median(ratios):.2f} | "
              f"{min(ratios):.2f}-{max(ratios):.2f} |")
        print(f"\ndecoded frames vs torch: max |diff| {diff.max()}, {(diff > 0).mean() * 100:.2f}% of values differ")
        if args.roofline:
            flops, rates = product_flops(runs["torch"]), dense_matmul_rates()
            t_torch, t_jax = statistics.median(times["torch"]), statistics.median(times["jax"])
            print("\n" + rates_line(rates) + "\n")
            print(f"| GFLOP, products | torch GFLOP/s | JAX GFLOP/s | JAX time at {args.target}x torch (s) | "
                  f"{TARGET_HEADER} |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            print(f"| {flops / 1e9:.1f} | {flops / t_torch / 1e9:.0f} | {flops / t_jax / 1e9:.0f} | "
                  f"{target_cells(flops, t_torch, args.target, rates)} |")


if __name__ == "__main__":
    main()
