"""Single-kernel timings, JAX (jit) against PyTorch, at UNet-like shapes on this machine.

Explains where a whole-model difference between the frameworks comes from (the
kernels of the backend, not the model code):

    .venv/bin/python benchmarks/bench_kernels.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch


def median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    x = rng.standard_normal((4, 8, 8, 1280), np.float32)
    w = rng.standard_normal((3, 3, 1280, 1280), np.float32) * 0.01
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    jx, jw = jnp.asarray(x), jnp.asarray(w)
    tx, tw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    rows.append(("conv 3x3 1280->1280, (4, 8, 8)", median_seconds(lambda: conv(jx, jw), args.repeats),
                 median_seconds(lambda: torch.nn.functional.conv2d(tx, tw, padding=1), args.repeats)))

    a, b = rng.standard_normal((256, 1280), np.float32), rng.standard_normal((1280, 5120), np.float32)
    mm = jax.jit(jnp.matmul)
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    rows.append(("matmul (256, 1280) x (1280, 5120)", median_seconds(lambda: mm(ja, jb), args.repeats),
                 median_seconds(lambda: ta @ tb, args.repeats)))

    attention = jax.jit(jax.nn.dot_product_attention)
    for label, shape in [("spatial attention: 4 x 256 tokens, 20 heads x 64", (4, 256, 20, 64)),
                         ("temporal attention: 256 x 4 frames, 20 heads x 64", (256, 4, 20, 64))]:
        q = rng.standard_normal(shape, np.float32)
        jq, tq = jnp.asarray(q), torch.from_numpy(q).permute(0, 2, 1, 3).contiguous()
        rows.append((label, median_seconds(lambda: attention(jq, jq, jq), args.repeats),
                     median_seconds(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tq, tq),
                                    args.repeats)))

    print(f"device {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}, float32, "
          f"median of {args.repeats}\n")
    print("| kernel | JAX jit (ms) | torch (ms) | JAX / torch |\n|---|---:|---:|---:|")
    for label, jax_s, torch_s in rows:
        print(f"| {label} | {jax_s * 1e3:.1f} | {torch_s * 1e3:.1f} | {jax_s / torch_s:.2f} |")


if __name__ == "__main__":
    main()
