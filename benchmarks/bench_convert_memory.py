"""Peak memory and time of converting the full-size SVD-XT + ControlNeXt checkpoints.

Writes random-weight PyTorch checkpoints with the real SVD-XT configurations (UNet
1.52e9 parameters, VAE, CLIP ViT-H/14, ControlNeXt; about 9 GB in float32) to a
scratch folder, then runs `controlnext-convert` in a child process and prints its wall time and peak
memory: ru_maxrss (all resident pages, including the memory-mapped source file, which
the kernel can drop at any time) and the peak of anonymous memory (what the process
really allocates), sampled every 0.2 s from /proc.

    .venv/bin/python benchmarks/bench_convert_memory.py --workdir /tmp/bench_convert [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from controlnext_jax.testing.torch_checkpoints import (
    model_configs,
    torch_models,
    write_controlnext_file,
    write_svd_folder,
)


def anon_gib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # the child just exited
        return 0.0
    return int(status.split("RssAnon:")[1].split()[0]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--keep", action="store_true", help="keep the scratch checkpoints")
    args = parser.parse_args()

    svd = args.workdir / "svd"
    if not (svd / "unet").exists():
        start = time.perf_counter()
        configs = model_configs("svd_xt")
        models = torch_models(configs)
        write_svd_folder(svd, models, configs)
        write_controlnext_file(args.workdir / "controlnet.bin", models["controlnext"])
        del models
        print(f"wrote full-size random checkpoints in {time.perf_counter() - start:.0f}s")
    out = args.workdir / f"converted_{args.dtype}"
    exe = Path(sys.executable).parent / "controlnext-convert"
    start = time.perf_counter()
    child = subprocess.Popen([str(exe), f"svd={svd}", f"controlnext={args.workdir / 'controlnet.bin'}",
                              f"out={out}", f"dtype={args.dtype}", "overwrite=true"])
    peak_anon = 0.0
    while child.poll() is None:
        peak_anon = max(peak_anon, anon_gib(child.pid))
        time.sleep(0.2)
    if child.returncode:
        sys.exit(f"controlnext-convert failed with status {child.returncode}")
    wall = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB on Linux
    sources = sum(f.stat().st_size for f in svd.rglob("*.safetensors")) / 2**30
    print("\n| what | value |\n|---|---:|")
    print(f"| source checkpoint size (GiB) | {sources:.2f} |")
    print(f"| stored dtype | {args.dtype} |")
    print(f"| conversion wall time (s) | {wall:.0f} |")
    print(f"| conversion peak RSS, incl. mmapped source pages (GiB) | {peak_gib:.2f} |")
    print(f"| conversion peak anonymous memory (GiB, sampled) | {peak_anon:.2f} |")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
