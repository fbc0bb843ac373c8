"""Is XLA:CPU's fault with the decode inside the sampling program on several devices still there?

docs/sampling.md (Several devices): on 2 emulated CPU devices, the small random-weight model's
frames came out wrong when the decode ran in the same program as the sampling loop, so the
pipeline runs the decode as a program of its own there (`StagedProgram`). Run this after a
jax upgrade: when the "decode inside" row agrees with one device in every call, the staging
could go. Prints one table; builds its random checkpoint in a temporary folder (about 2 min on
2 cores).

    .venv/bin/python benchmarks/probe_multi_device_decode.py --calls 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from controlnext_jax.pipeline import load_pipeline, validate_params  # noqa: E402
from controlnext_jax.testing.torch_checkpoints import model_configs  # noqa: E402
from controlnext_jax.testing.torch_sampler import build_random_release  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4, help="calls of each compiled program")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _, ckpt = build_random_release(Path(tmp), model_configs("small"), seed=0)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)
        poses = rng.integers(0, 256, (14, 128, 96, 3), dtype=np.uint8)
        kw = dict(height=128, width=96, num_inference_steps=2, batch_frames=8, overlap=2, seed=1,
                  output_type="np", reference_quirks=True)
        one = load_pipeline(ckpt, devices=jax.devices()[:1], compilation_cache_dir=None)(image, poses, **kw)
        two = load_pipeline(ckpt, compilation_cache_dir=None)
        inputs, static = two.prepare(image, poses, validate_params(num_frames=14, **kw))
        # the decode inside the sampling program: the single program the pipeline used before
        inside = two._program.lower(two._params, inputs, **static).compile()
        rows = {"decode inside the sampling program": lambda: inside(two._params, inputs),
                "decode as its own program (the pipeline)": lambda: two(image, poses, **kw)}
        print(f"jax {jax.__version__}, {len(jax.devices())} CPU devices, small model, 14 frames of 128x96, "
              f"2 steps; uint8 frames against one device's, per call: max |diff| / share of values differing")
        print("\n| program | " + " | ".join(f"call {i + 1}" for i in range(args.calls)) + " |")
        print("|---|" + "---:|" * args.calls)
        for name, call in rows.items():
            cells = []
            for _ in range(args.calls):
                diff = np.abs(np.asarray(call()).astype(int) - one.astype(int))
                cells.append(f"{diff.max()} / {(diff > 0).mean():.2%}")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
