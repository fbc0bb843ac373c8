"""Single-kernel timings at the SVD UNet's shapes: the package's CPU lowering, the alternative
lowering and PyTorch, in one process.

Explains where a whole-model difference comes from (the backends' kernels, not the model
code) and why the package lowers as it does on CPU (`controlnext_jax.models.layers`:
im2col up to `IM2COL_MAX_POSITIONS` output positions, lax.conv above; `attention.attend`:
einsums over (batch, heads, tokens, dim)). Each row: the median of `--repeats` calls after
one warm-up call (compilation), float32.

    .venv/bin/python benchmarks/bench_kernels.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from controlnext_jax.models.attention import attend
from controlnext_jax.models.layers import conv_forward, conv_uses_im2col


def median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def conv_rows(rng, repeats: int) -> list[tuple]:
    """3x3 spatial convolutions (frames folded into batch, as the UNet runs them) and the
    temporal (3, 1, 1) convolutions of its temporal ResNet blocks."""
    rows = []
    cases = [((4, 32, 32, 320), (3, 3, 320, 320)), ((4, 32, 32, 640), (3, 3, 640, 320)),
             ((4, 16, 16, 640), (3, 3, 640, 640)), ((4, 16, 16, 1280), (3, 3, 1280, 640)),
             ((4, 8, 8, 1280), (3, 3, 1280, 1280)), ((4, 4, 4, 1280), (3, 3, 1280, 1280)),
             ((4, 2, 2, 1280), (3, 3, 1280, 1280)),
             ((1, 4, 32, 32, 320), (3, 1, 1, 320, 320)), ((1, 4, 16, 16, 640), (3, 1, 1, 640, 640))]
    for x_shape, k_shape in cases:
        nd = len(k_shape) - 2
        padding = [(k // 2, k // 2) for k in k_shape[:nd]]
        strides = (1,) * nd
        x = rng.standard_normal(x_shape, np.float32)
        kernel = rng.standard_normal(k_shape, np.float32) * 0.02
        jx, jk = jnp.asarray(x), jnp.asarray(kernel)
        lowered = {low: jax.jit(lambda x, k, low=low: conv_forward(x, k, strides, padding, low))
                   for low in ("im2col", "xla")}
        package = "im2col" if conv_uses_im2col(x_shape, k_shape, strides, padding, platform="cpu") else "xla"
        other = "xla" if package == "im2col" else "im2col"
        # torch: channels-first input, (out, in, *taps) weight
        tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
        tk = torch.from_numpy(np.moveaxis(kernel, (-1, -2), (0, 1)).copy())
        conv = torch.nn.functional.conv2d if nd == 2 else torch.nn.functional.conv3d
        tpad = tuple(p for p, _ in padding)
        label = f"conv {'x'.join(map(str, k_shape[:nd]))} {k_shape[-2]}->{k_shape[-1]}, {x_shape[:-1]}"
        with torch.no_grad():
            torch_s = median_seconds(lambda: conv(tx, tk, padding=tpad), repeats)
        rows.append((label, f"{package}", median_seconds(lambda: lowered[package](jx, jk), repeats),
                     f"{other}", median_seconds(lambda: lowered[other](jx, jk), repeats), torch_s))
    return rows


def attention_rows(rng, repeats: int) -> list[tuple]:
    rows = []
    for label, shape in [("spatial attention, 4 x 1024 tokens, 5 heads x 64", (4, 1024, 5, 64)),
                         ("spatial attention, 4 x 256 tokens, 10 heads x 64", (4, 256, 10, 64)),
                         ("temporal attention, 1024 x 4 frames, 5 heads x 64", (1024, 4, 5, 64))]:
        q, k, v = (rng.standard_normal(shape, np.float32) for _ in range(3))
        jq, jk, jv = map(jnp.asarray, (q, k, v))
        einsum = jax.jit(lambda q, k, v: attend(q, k, v, "einsum"))
        xla = jax.jit(lambda q, k, v: attend(q, k, v, "xla"))
        tq, tk, tv = (torch.from_numpy(a).permute(0, 2, 1, 3).contiguous() for a in (q, k, v))
        torch_s = median_seconds(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv), repeats)
        rows.append((label, "einsum", median_seconds(lambda: einsum(jq, jk, jv), repeats),
                     "dot_product_attention", median_seconds(lambda: xla(jq, jk, jv), repeats), torch_s))
    a, b = rng.standard_normal((4096, 320), np.float32), rng.standard_normal((320, 2560), np.float32)
    mm = jax.jit(jnp.matmul)
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    rows.append(("matmul (4096, 320) x (320, 2560) (feed-forward in, 32x32 level)", "dot",
                 median_seconds(lambda: mm(ja, jb), repeats), "-", float("nan"), median_seconds(lambda: ta @ tb, repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = conv_rows(rng, args.repeats) + attention_rows(rng, args.repeats)
    print(f"device {jax.devices()[0].platform}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, float32, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| kernel | package's lowering | ms | other lowering | ms | torch (ms) | package / torch |")
    print("|---|---|---:|---|---:|---:|---:|")
    for label, pkg, pkg_s, other, other_s, torch_s in rows:
        other_ms = "-" if np.isnan(other_s) else f"{other_s * 1e3:.1f}"
        print(f"| {label} | {pkg} | {pkg_s * 1e3:.1f} | {other} | {other_ms} | {torch_s * 1e3:.1f} | "
              f"{pkg_s / torch_s:.2f} |")


if __name__ == "__main__":
    main()
