"""One UNet forward: JAX against PyTorch on the same weights and inputs, alternating in one process.

Builds the UNet in PyTorch with random weights (PyTorch default init), fills the JAX model
with the same weights (abstract build, no second random init), then times rounds: each round
runs torch eager once and every JAX variant once (the order flips every round so that drift
in the machine's load hits every run alike). Each JAX variant's figure is the median over
rounds of its time divided by the same round's torch time; one warm-up round (the JAX
compilation, torch's first-call allocations) is excluded. Also prints each variant's relative
error against torch.

JAX variants (`--variants`):
- `package`: the package's defaults (on CPU: small convolutions as im2col matmuls, attention
  as einsums over (batch, heads, tokens, dim); `controlnext_jax.models.layers` / `attention`);
- `xla`: lax.conv everywhere and `jax.nn.dot_product_attention` (the forward before those defaults);
- `conv-xla` / `attn-xla`: only one of the two changes; `t16` ... `t1024`: the package's
  defaults with another im2col threshold (output positions per image).
The package's XLA flags (`controlnext_jax.xla_flags`) are per process: run once more with
`CONTROLNEXT_JAX_XLA_DEFAULTS=0` for figures without them.

`--batch 2` times one classifier-free-guidance call (animate's batch: unconditional and
conditional halves). With several JAX devices visible (on CPU:
`XLA_FLAGS=--xla_force_host_platform_device_count=2`) the parameters are replicated on each
and the batch is split over them, as animate's pipeline does (`controlnext_jax.pipeline.sharding`);
the replicas cost one more copy of the weights per device, so keep that to the small models.

`--roofline` adds, per latent, the forward's FLOPs counted two ways: XLA's cost analysis of the
package's compiled program (every operation) and torch's `FlopCounterMode` (matrix products,
convolutions and attention only), the rate each framework reached on the product FLOPs
(GFLOP/s), the dense float32 matmul rate of each framework on this machine (square products,
the best of 2048 and 4096), and what `--target` (a ratio to torch's time) would ask: the JAX
time and the product-FLOP rate it implies, as a fraction of the best dense matmul rate
measured. The products alone cannot run faster than that rate (the rest of the forward only
adds time), so a fraction near or above 1 is a target this machine cannot meet.

Models (`--model`): `svd_xt` (full size, 1.52e9 parameters: about 6 GB of float32 weights in
each framework), `tiny` (configs/model/tiny.yaml), or `mid`, defined here: SVD-XT's block
structure at a fifth of the width (64..256 channels, 64-wide heads), a small configuration
with the full model's depth.

    .venv/bin/python benchmarks/bench_unet.py --model svd_xt --frames 4 --sizes 16 32 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from gpu_suite import flops_of  # this folder's GPU suite: XLA's cost analysis of a compiled program
from jax.sharding import NamedSharding, PartitionSpec
from roofline import TARGET_HEADER, dense_matmul_rates, product_flops, rates_line, target_cells

from controlnext_jax.checkpoint.torch_layout import assign_state_dict, param_table
from controlnext_jax.models.attention import set_attention_implementation
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.models.layers import set_conv_lowering
from controlnext_jax.pipeline.sharding import BATCH_AXIS, make_mesh, replicate
from controlnext_jax.testing.parity_cases import rel_err, to_nhwc
from controlnext_jax.testing.torch_checkpoints import model_configs

# variant -> (conv lowering, attention implementation, im2col threshold of "auto" (None: the package's))
VARIANTS = {"package": ("auto", None, None), "xla": ("xla", "xla", None), "conv-xla": ("xla", None, None),
            "attn-xla": ("auto", "xla", None), **{f"t{n}": ("auto", None, n) for n in (16, 64, 256, 1024)}}


def unet_config(model: str) -> dict:
    if model != "mid":
        return model_configs(model)["unet"]
    config = dict(model_configs("svd_xt")["unet"])
    config.update(block_out_channels=[64, 128, 256, 256], num_attention_heads=[1, 2, 4, 4],
                  cross_attention_dim=256, addition_time_embed_dim=64, projection_class_embeddings_input_dim=192)
    return config


def share_weights(ref_model: torch.nn.Module, ours: nnx.Module) -> None:
    """Point torch's linear weights and vectors at the JAX arrays' memory (zero-copy NumPy views;
    a linear weight is the transposed view, which torch's addmm reads without a copy), so that the
    full UNet's weights exist about 1.5 times, not twice: the two 6 GB copies plus other jobs ran
    this 24 GiB machine out of memory. Convolution kernels stay copied (their layouts differ)."""
    import warnings

    flat = dict(nnx.to_flat_state(nnx.state(ours, nnx.Param)))
    with warnings.catch_warnings():  # from_numpy on read-only JAX buffers: torch never writes them here
        warnings.simplefilter("ignore", UserWarning)
        for key, slot in param_table(ours).items():
            if slot.layout == "conv":
                continue
            view = torch.from_numpy(np.asarray(flat[slot.path].get_value()))
            ref_model.get_parameter(key).data = view.t() if slot.layout == "linear" else view


def stage(name: str) -> None:
    rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 2**20
    print(f"[bench_unet] {name}: RSS {rss:.1f} GiB", file=sys.stderr, flush=True)


def seconds(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.asarray(fn())  # np.asarray waits for JAX's asynchronous result
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="svd_xt", help="svd_xt, tiny (configs/model/<name>.yaml) or mid")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16], help="square latent sizes")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--variants", nargs="+", default=["xla", "package"], choices=sorted(VARIANTS))
    parser.add_argument("--batch", type=int, default=1, help="videos per call (2: one CFG call)")
    parser.add_argument("--roofline", action="store_true",
                        help="FLOPs, reached GFLOP/s and what --target asks against the dense matmul rate")
    parser.add_argument("--target", type=float, default=0.7, help="ratio to torch's time asked (with --roofline)")
    parser.add_argument("--torch-profile", action="store_true",
                        help="after the rounds, one more torch forward under torch.profiler: its top operators")
    args = parser.parse_args()

    from diffusers import UNetSpatioTemporalConditionModel

    config = unet_config(args.model)
    torch.manual_seed(0)
    ref_model = UNetSpatioTemporalConditionModel.from_config(config).eval()
    n_params = sum(p.numel() for p in ref_model.parameters())
    component = COMPONENTS["unet"]
    ours = component.build_abstract(component.config_from_dict(config))
    assign_state_dict(ours, {k: v.numpy() for k, v in ref_model.state_dict().items()}, source="torch UNet")
    share_weights(ref_model, ours)
    stage("models built")

    def forward(variant: str):
        """A pure jitted forward over the parameters as plain arrays (nnx.jit would also return
        the module state: a second copy of the weights)."""
        lowering, attention, max_positions = VARIANTS[variant]
        set_conv_lowering(ours, lowering, max_positions)
        set_attention_implementation(ours, attention)
        graphdef, params = nnx.split(ours)  # the settings live in graphdef: one per variant
        params = params_on(params)
        apply = jax.jit(lambda params, *inputs: nnx.merge(graphdef, params)(*inputs))
        run = lambda *inputs: apply(params, *inputs)  # noqa: E731
        # XLA's cost analysis of a program split over devices counts one device's share
        run.flops = lambda *inputs: flops_of(apply.lower(params, *inputs).compile()) * len(jax.devices())
        return run

    mesh = make_mesh()  # None on one device
    params_on = (lambda p: replicate(p, mesh)) if mesh is not None else (lambda p: p)
    forwards = {v: forward(v) for v in args.variants}
    print(f"UNet {args.model}: {n_params / 1e9:.3f}e9 parameters, {args.frames} frames, batch {args.batch}, "
          f"{len(jax.devices())} {jax.devices()[0].platform} device(s), torch threads {torch.get_num_threads()}, jax {jax.__version__}, "
          f"torch {torch.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("\n| latent | run | median time (s) | median ratio to torch | ratio range | rel. error vs torch |")
    print("|---|---|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(1)
    b = args.batch
    split = (lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))) if mesh else jnp.asarray
    roofline_rows = []
    for size in args.sizes:
        sample = torch.randn(b, args.frames, config["in_channels"], size, size, generator=g)
        t = torch.full((b,), 0.25 * np.log(10.0))
        context = torch.randn(b, 1, config["cross_attention_dim"], generator=g)
        added = torch.randn(b, 3, generator=g).abs() * torch.tensor([[6.0, 127.0, 0.02]])
        jax_inputs = tuple(split(np.asarray(x)) for x in (to_nhwc(sample), t.numpy(), context.numpy(), added.numpy()))

        def run_torch():
            with torch.no_grad():
                return ref_model(sample, t, context, added).sample

        runs = {"torch": run_torch, **{v: (lambda f=f: f(*jax_inputs)) for v, f in forwards.items()}}
        times = {name: [] for name in runs}
        outputs = {}
        for r in range(args.rounds + 1):  # round 0: warm-up (JAX compiles), not counted
            order = list(runs) if r % 2 else list(runs)[::-1]
            for name in order:
                elapsed, outputs[name] = seconds(runs[name])
                if r:
                    times[name].append(elapsed)
            stage(f"{size}x{size} round {r}")
        ref = np.moveaxis(outputs["torch"], -3, -1)
        latent = f"({b}, {args.frames}, {size}, {size}, {config['in_channels']})"
        print(f"| {latent} | torch float32 eager | {statistics.median(times['torch']):.3f} | 1 | - | - |")
        for v in forwards:
            ratios = [a / b for a, b in zip(times[v], times["torch"])]
            print(f"| {latent} | JAX float32 jit, {v} | {statistics.median(times[v]):.3f} | "
                  f"{statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
                  f"{rel_err(outputs[v], ref):.1e} |", flush=True)
        if args.roofline:
            roofline_rows.append((latent, forwards[args.variants[0]].flops(*jax_inputs), product_flops(run_torch),
                                  {n: statistics.median(ts) for n, ts in times.items()}))
        if args.torch_profile:  # where torch's time goes, to compare with the JAX kernels (bench_kernels.py)
            with torch.profiler.profile() as prof:
                run_torch()
            print(f"\ntorch.profiler, one forward at {latent}:\n"
                  + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10), flush=True)
    if roofline_rows:
        print_roofline(roofline_rows, args.variants, args.target)


def print_roofline(rows, variants, target: float) -> None:
    rates = dense_matmul_rates()
    print("\n" + rates_line(rates))
    print(f"\n| latent | GFLOP, XLA ({variants[0]}) | GFLOP, products | torch (s) | torch GFLOP/s | "
          f"{' | '.join(f'JAX {v} GFLOP/s' for v in variants)} | "
          f"JAX time at {target}x torch (s) | {TARGET_HEADER} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(variants) + "---:|---:|---:|---:|")
    for latent, xla_flops, flops, medians in rows:
        reached = " | ".join(f"{flops / medians[v] / 1e9:.0f}" for v in variants)
        print(f"| {latent} | {xla_flops / 1e9:.1f} | {flops / 1e9:.1f} | {medians['torch']:.3f} | "
              f"{flops / medians['torch'] / 1e9:.0f} | {reached} | "
              f"{target_cells(flops, medians['torch'], target, rates)} |", flush=True)


if __name__ == "__main__":
    main()
