"""Evaluation speed per metric on this machine (aligned frames per second).

    .venv/bin/python benchmarks/bench_eval.py [--clips 2] [--frames 32] [--height 1024 --width 576]
                                              [--video dance.mp4] [--workdir DIR]

Builds a test set of `--clips` clips in a temporary folder: ground truth = driving video =
`--video` (any footage with one person; default: scikit-image's astronaut drifting across
the frame), resized to cover (height, width); generated video = the reference frame, then
every `sample_stride`-th ground-truth frame shifted by 3 px with noise added (a stand-in
for a generated video: the metrics' cost does not depend on what the pixels show). Runs the
real job (`controlnext_jax.metrics.evaluation.run`, MediaPipe for the pose metric, the
bundled I3D weights for FVD, LPIPS AlexNet with random weights) and prints the time each
metric took from the report (`details.speed`), then SSIM alone against scikit-image on the
same frames (the values agree to 1e-14).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STRIDE = 2


def source_frames(video: str | None, count: int, height: int, width: int) -> np.ndarray:
    from controlnext_jax.metrics.dataset import cover_crop

    if video:
        from controlnext_jax.pose.media import sampled_frames

        frames = np.stack(list(sampled_frames(video, 1, count)))
    else:
        import cv2
        import skimage.data

        astro = skimage.data.astronaut()
        frames = np.stack([cv2.warpAffine(astro, np.float32([[1, 0, 2 * (t % 40) - 40], [0, 1, 0]]), (512, 512),
                                          borderValue=(30, 30, 30)) for t in range(count)])
    if len(frames) < count:
        frames = np.concatenate([frames] * (-(-count // len(frames))))[:count]
    return cover_crop(frames, height, width)


def build_dataset(root: Path, clips: int, aligned: int, height: int, width: int, video: str | None) -> None:
    import imageio.v3 as iio
    from PIL import Image

    rng = np.random.default_rng(0)
    gt = source_frames(video, aligned * STRIDE + 1, height, width)
    for c in range(clips):
        folder = root / f"clip_{c}"
        folder.mkdir(parents=True)
        iio.imwrite(folder / "ground_truth.mp4", gt, plugin="FFMPEG", fps=30, macro_block_size=1)
        shutil.copy(folder / "ground_truth.mp4", folder / "driving.mp4")
        Image.fromarray(gt[0]).save(folder / "reference.png")
        gen = np.roll(gt[: aligned * STRIDE: STRIDE], 3, axis=2).astype(np.int16)
        gen = np.clip(gen + rng.normal(0, 4, gen.shape), 0, 255).astype(np.uint8)
        iio.imwrite(folder / "generated.mp4", np.concatenate([gt[:1], gen]), plugin="FFMPEG", fps=15,
                    macro_block_size=1)


def lpips_weights(directory: Path) -> tuple[Path, Path]:
    """Random-weight AlexNet LPIPS files in the torchvision / lpips layouts (speed only)."""
    import torch

    torch.manual_seed(0)
    convs = [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
    backbone = {}
    for index, (cin, cout, k) in zip((0, 3, 6, 8, 10), convs):
        backbone[f"features.{index}.weight"] = torch.randn(cout, cin, k, k) * 0.05
        backbone[f"features.{index}.bias"] = torch.zeros(cout)
    torch.save(backbone, directory / "alexnet.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1 for i, (_, c, _) in enumerate(convs)},
               directory / "alex.pth")
    return directory / "alexnet.pth", directory / "alex.pth"


def ssim_against_skimage(frames_a: np.ndarray, frames_b: np.ndarray) -> tuple[float, float, float]:
    from skimage.metrics import structural_similarity

    from controlnext_jax.metrics.frame_metrics import ssim

    start = time.perf_counter()
    ours = ssim(frames_a, frames_b)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    ref = [structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(frames_a, frames_b)]
    t_ref = time.perf_counter() - start
    return t_ours, t_ref, float(np.abs(ours - np.array(ref)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=32, help="aligned frames per clip")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--video", default=None, help="source footage (default: a synthetic astronaut clip)")
    parser.add_argument("--workdir", default=None, help="keep the test set and report here")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from controlnext_jax.cli import CONFIG_DIR
    from controlnext_jax.metrics import evaluation

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_eval-"))
    root, out = work / "set", work / "report"
    if root.exists():
        shutil.rmtree(root)
    build_dataset(root, args.clips, args.frames, args.height, args.width, args.video)
    backbone, linear = lpips_weights(work)
    overrides = [f"dataset.root={root}", f"out={out}", "overwrite=true", "progress=false",
                 f"alignment.sample_stride={STRIDE}", "fvd.clip_length=16", "fvd.max_clips_per_video=0",
                 f"frames.lpips_backbone={backbone}", f"frames.lpips_linear={linear}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    start = time.perf_counter()
    evaluation.run(cfg, command="bench_eval")
    total = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    speed, frames = report["details"]["speed"], report["header"]["frames compared"]

    print(f"controlnext-eval {' '.join(overrides[2:])}")
    print(f"{args.clips} clips x {args.frames} aligned frames at {args.height}x{args.width} "
          f"({'footage ' + os.path.basename(args.video) if args.video else 'synthetic astronaut'}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}\n")
    print("| metric | seconds | aligned frames / s |")
    print("|---|---:|---:|")
    for name, v in speed.items():
        print(f"| {name} | {v['seconds']:.1f} | {v['frames_per_second']:.2f} |")
    print(f"| whole run (reading, checks, report) | {total:.1f} | {frames / total:.2f} |")

    from controlnext_jax.metrics.dataset import Alignment, align_clip, discover, read_generated

    alignment = Alignment(STRIDE)
    clip = align_clip(discover(root)[0], read_generated(discover(root)[0], alignment), alignment)
    n = min(16, len(clip.generated_aligned))
    t_ours, t_ref, diff = ssim_against_skimage(clip.generated_aligned[:n], clip.ground_truth[:n])
    print(f"\nSSIM of {n} frames at {args.height}x{args.width}: ours {t_ours:.2f} s, scikit-image {t_ref:.2f} s "
          f"(largest difference {diff:.1e})")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
