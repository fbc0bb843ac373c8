"""Full-size SVD-XT UNet: JAX against PyTorch on one forward pass, random weights.

Builds the UNet (1.52e9 parameters) in PyTorch with random weights, fills the JAX model
with the same weights (abstract build, no second random init), runs one forward at a
small latent in both frameworks and prints relative error and times side by side, plus
the bfloat16 JAX output against the float32 PyTorch output (cosine similarity and
relative error). Optionally adds the ControlNeXt injection to both.

    .venv/bin/python benchmarks/bench_unet.py --frames 4 --size 16 16 [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from controlnext_jax.checkpoint.torch_layout import assign_state_dict, materialize
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.testing.parity_cases import rel_err, to_nhwc
from controlnext_jax.testing.torch_checkpoints import model_configs


def rss_gib() -> float:
    """Resident memory of this process (Linux /proc), printed per stage to stderr."""
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 2**20


def stage(name: str) -> None:
    print(f"[bench_unet] {name}: RSS {rss_gib():.1f} GiB", file=sys.stderr, flush=True)


def timed(fn, repeats: int) -> tuple[np.ndarray, float, float]:
    """(output, first-call seconds, median seconds of the next `repeats` calls)."""
    start = time.perf_counter()
    out = np.asarray(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn())
        times.append(time.perf_counter() - start)
    return out, first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(16, 16), metavar=("H", "W"), help="latent size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="svd_xt", help="configs/model/<name>.yaml")
    args = parser.parse_args()

    from diffusers import UNetSpatioTemporalConditionModel

    config = model_configs(args.model)["unet"]
    torch.manual_seed(0)
    ref_model = UNetSpatioTemporalConditionModel.from_config(config).eval()
    n_params = sum(p.numel() for p in ref_model.parameters())
    stage("torch model built")

    g = torch.Generator().manual_seed(1)
    h, w = args.size
    sample = torch.randn(1, args.frames, config["in_channels"], h, w, generator=g)
    t = torch.tensor([0.25 * np.log(10.0)])
    context = torch.randn(1, 1, config["cross_attention_dim"], generator=g)
    added = torch.tensor([[6.0, 127.0, 0.02]])
    jax_inputs = (jnp.asarray(to_nhwc(sample)), jnp.asarray(t.numpy()), jnp.asarray(context.numpy()),
                  jnp.asarray(added.numpy()))

    def jitted(model):
        """A pure jitted forward over the model's parameters: nnx.jit would also return the
        module state (a second copy of 6 GB of weights) to propagate mutations."""
        graphdef, params = nnx.split(model)
        apply = jax.jit(lambda params, *inputs: nnx.merge(graphdef, params)(*inputs))
        return lambda *inputs: apply(params, *inputs)

    with torch.no_grad():
        ref, torch_first, torch_time = timed(lambda: ref_model(sample, t, context, added).sample, args.repeats)
    ref = to_nhwc(torch.from_numpy(ref))
    stage("torch forward done")

    # Memory (the full UNet is 6.1 GB in float32): one torch copy and one JAX copy at a time;
    # the bfloat16 model is cast from the JAX float32 one after the torch model is gone.
    component = COMPONENTS["unet"]
    cfg = component.config_from_dict(config)
    state = {k: v.numpy() for k, v in ref_model.state_dict().items()}  # views, no copy
    ours32 = component.build_abstract(cfg)
    assign_state_dict(ours32, state, source="torch UNet")  # strict; one tensor converted at a time
    del state
    stage("JAX float32 model filled")
    ref_model = None  # drop the torch weights (the lambda above holds the name, not the model)
    params32 = dict(nnx.to_flat_state(nnx.state(ours32, nnx.Param)))
    ours16 = materialize(component.build_abstract(cfg, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16),
                         lambda path: params32[path].get_value(), param_dtype=jnp.bfloat16)
    stage("JAX bfloat16 model cast")
    forward32, forward16 = jitted(ours32), jitted(ours16)
    out32, jax_first, jax_time = timed(lambda: forward32(*jax_inputs), args.repeats)
    stage("JAX float32 forward done")
    out16, bf_first, bf_time = timed(lambda: forward16(*jax_inputs).astype(jnp.float32), args.repeats)
    cos = float(np.dot(out16.ravel(), ref.ravel()) / (np.linalg.norm(out16) * np.linalg.norm(ref)))

    print(f"UNet {args.model}: {n_params / 1e9:.3f}e9 parameters, latent (1, {args.frames}, {h}, {w}, "
          f"{config['in_channels']}), device {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}")
    print("\n| run | first call (s) | median of next calls (s) | rel. error vs torch fp32 | cosine vs torch fp32 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| torch float32 (eager) | {torch_first:.2f} | {torch_time:.2f} | - | - |")
    print(f"| JAX float32 (jit; first call compiles) | {jax_first:.2f} | {jax_time:.2f} | {rel_err(out32, ref):.2e} | "
          f"{float(np.dot(out32.ravel(), ref.ravel()) / (np.linalg.norm(out32) * np.linalg.norm(ref))):.6f} |")
    print(f"| JAX bfloat16 params+activations (jit) | {bf_first:.2f} | {bf_time:.2f} | {rel_err(out16, ref):.2e} | "
          f"{cos:.6f} |")


if __name__ == "__main__":
    main()
