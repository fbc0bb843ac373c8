"""What one training clip costs the loader: the same clips as mp4 videos and as frame arrays.

Two `controlnext-synth` folders of the same split, seed and size (the second with
`video_format=npy`, so clip i holds the same frames in both) are read clip by clip with
`load_clip` in this process, the two formats alternating, each clip with the same draws (window,
reference, crop) in both. Per format: the median wall and CPU time per clip over `--rounds`
rounds of `--clips` clips (CPU time includes the ffmpeg child processes the mp4 path starts).

    controlnext-synth out=/tmp/b/mp4 num_clips=40 frames=48 height=128 width=96 seed=0
    controlnext-synth out=/tmp/b/npy num_clips=40 frames=48 height=128 width=96 seed=0 video_format=npy
    python benchmarks/bench_loader.py /tmp/b/mp4 /tmp/b/npy [--frames 8] [--interval 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from controlnext_jax.training.data_clip import load_clip
from controlnext_jax.training.data_sources import DataConfig, check_data


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_format(records, cfg: DataConfig) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    for k, record in enumerate(records):
        load_clip(record, cfg, np.random.default_rng([cfg.seed, k]))
    return (time.perf_counter() - wall) / len(records), (cpu_seconds() - cpu) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mp4_root")
    parser.add_argument("npy_root")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--frames", type=int, default=8, help="sample_n_frames")
    parser.add_argument("--interval", type=int, default=2, help="interval_frame")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfgs = {name: DataConfig(format="pairs", root=root, height=args.height, width=args.width,
                             sample_n_frames=args.frames, interval_frame=args.interval, workers=0)
            for name, root in (("mp4", args.mp4_root), ("npy", args.npy_root))}
    records = {name: check_data(cfg)[:args.clips] for name, cfg in cfgs.items()}
    first = {name: load_clip(recs[0], cfgs[name], np.random.default_rng([0, 0])) for name, recs in records.items()}
    # the same frames in both: mp4 (crf 18) differs by a few levels of 255
    print(f"clip 0, mean |mp4 - npy| frames: {np.abs(first['mp4']['frames'] - first['npy']['frames']).mean() * 127.5:.2f}"
          f" levels of 255")
    times = {name: [] for name in cfgs}
    for r in range(args.rounds):
        for name in (("mp4", "npy") if r % 2 == 0 else ("npy", "mp4")):
            times[name].append(time_format(records[name], cfgs[name]))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(records['mp4'])} clips "
          f"of {args.frames} frames every {args.interval} at {args.height}x{args.width}, {args.rounds} rounds\n")
    print("| clips stored as | wall ms per clip (median) | CPU ms per clip (median, ffmpeg included) |")
    print("|---|---:|---:|")
    for name, runs in times.items():
        print(f"| {name} | {statistics.median(w for w, _ in runs) * 1e3:.1f} | "
              f"{statistics.median(c for _, c in runs) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
