"""What a CPU time target asks of the machine: product FLOPs against the dense matmul rate.

A forward's matrix products, convolutions and attention (counted by torch's `FlopCounterMode`)
cannot run faster than the machine's dense float32 matmul rate; everything else in the forward
(norms, activations, copies) only adds time. So a target time T for F product FLOPs asks for
at least F / T FLOP/s, and if that is near or above the best dense matmul rate either framework
reaches here, no implementation on this machine meets it. Used by `bench_unet.py --roofline` and
`bench_pipeline_cpu.py --roofline`.
"""

from __future__ import annotations

import statistics
import time


def dense_matmul_rates(sizes=(2048, 4096), repeats: int = 7) -> dict[str, float]:
    """Each framework's best float32 GFLOP/s on square n x n x n products (median of `repeats`)."""
    import jax
    import jax.numpy as jnp
    import torch

    def rate(fn, n: int) -> float:
        fn()  # warm-up: compilation, first-touch allocations
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 2.0 * n**3 / statistics.median(times) / 1e9

    rates = {"torch": 0.0, "jax": 0.0}
    matmul = jax.jit(jnp.matmul)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        ja, jb = jnp.asarray(a.numpy()), jnp.asarray(b.numpy())
        rates["torch"] = max(rates["torch"], rate(lambda: a @ b, n))
        rates["jax"] = max(rates["jax"], rate(lambda: matmul(ja, jb).block_until_ready(), n))
    return rates


def product_flops(fn) -> float:
    """FLOPs of the matrix products, convolutions and attention torch runs in fn()."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def rates_line(rates: dict[str, float]) -> str:
    return (f"Dense float32 matmul (best of 2048^3 and 4096^3): torch {rates['torch']:.0f} GFLOP/s, "
            f"JAX {rates['jax']:.0f} GFLOP/s. GFLOP/s below: product FLOPs (torch's FlopCounterMode) per second.")


TARGET_HEADER = "rate it needs (GFLOP/s) | / JAX's dense matmul rate | / best dense matmul rate"


def target_cells(flops: float, torch_seconds: float, target: float, rates: dict[str, float]) -> str:
    """The cells under f"JAX time at {target}x torch (s) | " + TARGET_HEADER."""
    needed = target * torch_seconds
    rate = flops / needed / 1e9
    return f"{needed:.3f} | {rate:.0f} | {rate / rates['jax']:.2f} | {rate / max(rates.values()):.2f}"
