"""Peak device memory of the animate program, predicted without a GPU or weights.

    .venv/bin/python benchmarks/predict_memory.py [--mode normal memory_saving] [--model svd_xt]
        [--size 1024 576] [--frames 151] [--remat none]

Builds the networks of configs/model/<model>.yaml abstractly (`jax.ShapeDtypeStruct`
parameters in bfloat16, the VAE in float32 as its force_upcast config asks: no weights
exist), lowers the pipeline's one program for the endpoint defaults (24-frame windows,
overlap 6, 25 steps, CFG, decode chunk 2) and compiles it for the backend at hand, here
the CPU; `compiled.memory_analysis()` then gives XLA's buffer assignment: arguments
(weights + inputs), outputs and temporaries. Peak = arguments + outputs + temporaries -
aliased. The CPU backend's buffer assignment approximates the GPU's: the same HLO and
liveness analysis, but other fusion decisions and no cuDNN/cuBLAS workspaces, so read it
as an estimate within some percent, not to the byte. The normal mode's attention is XLA's
(materialised logits); with cuDNN attention on a GPU that part shrinks.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.pipeline import memory_saving as memory_saving_module
from controlnext_jax.pipeline.pipeline import ControlNeXtPipeline
from controlnext_jax.sampling.scheduler import SchedulerConfig
from controlnext_jax.testing.torch_checkpoints import model_configs

GIB = 2**30
_COMPONENTS = ("unet", "vae", "image_encoder", "controlnext")


def abstract_pipeline(model: str, memory_saving: bool, dtype=jnp.bfloat16) -> ControlNeXtPipeline:
    raw = model_configs(model)
    configs = {n: COMPONENTS[n].config_from_dict(raw[n]) for n in _COMPONENTS}
    graphdefs, params = {}, {}
    for name, config in configs.items():
        param_dtype = jnp.float32 if name == "vae" and config.force_upcast else dtype
        graphdefs[name], params[name] = nnx.split(
            COMPONENTS[name].build_abstract(config, param_dtype=param_dtype, dtype=param_dtype))
    return ControlNeXtPipeline(graphdefs, params, configs, SchedulerConfig.from_dict(raw["scheduler"]),
                               devices=jax.devices()[:1], memory_saving=memory_saving)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", nargs="+", choices=("normal", "memory_saving"), default=["normal", "memory_saving"])
    parser.add_argument("--model", default="svd_xt", help="configs/model/<name>.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 576), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=151, help="video length (151: 9 windows of 24, overlap 6)")
    parser.add_argument("--batch-frames", type=int, default=24)
    parser.add_argument("--overlap", type=int, default=6)
    parser.add_argument("--remat", default=memory_saving_module.REMAT_POLICY,
                        help="the memory-saving mode's set_remat policy (to measure whether it pays)")
    args = parser.parse_args()
    memory_saving_module.REMAT_POLICY = args.remat

    h, w = args.size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (args.frames, h, w, 3), dtype=np.uint8)
    call = dict(height=h, width=w, batch_frames=args.batch_frames, overlap=args.overlap, seed=0)
    print(f"model {args.model}, {args.frames} frames of {h}x{w}, windows {args.batch_frames}/{args.overlap}, "
          f"25 steps, CFG, decode chunk 2, bf16 weights; compiled for {jax.devices()[0].platform}; "
          f"memory_saving remat: {args.remat}\n")
    print("| mode | weights + inputs (GiB) | outputs (GiB) | temporaries (GiB) | predicted peak (GiB) | compile (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in args.mode:
        pipe = abstract_pipeline(args.model, mode == "memory_saving")
        start = time.perf_counter()
        m = pipe.compile(image, poses, **call).memory_analysis()
        seconds = time.perf_counter() - start
        peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        print(f"| {mode} | {m.argument_size_in_bytes / GIB:.2f} | {m.output_size_in_bytes / GIB:.2f} | "
              f"{m.temp_size_in_bytes / GIB:.2f} | {peak / GIB:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
