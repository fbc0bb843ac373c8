"""Per-device memory of the full-size train step under FSDP, from XLA's compiled program; no weights exist.

The release's setting: the svd_xt.yaml UNet and the ControlNeXt module trained, VAE and CLIP
frozen, bf16 layers over float32 master weights, 576x1024, 14 frames, one video per batch
shard. The models are built abstractly (`nnx.eval_shape`), the step is lowered from abstract
arguments that carry their shardings and compiled for N fake CPU devices; XLA's
`memory_analysis()` then gives each device's bytes of arguments, outputs and temporaries.
CPU compilation of the full step takes long on small machines: --frames / --height / --width
make it smaller (the parameter and optimizer terms do not depend on them).

    python benchmarks/bench_train_memory.py --devices 8 --fsdp 8 [--frames 14 --height 576 --width 1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--data", type=int, default=1)
    parser.add_argument("--fsdp", type=int, default=8)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--model", default="svd_xt")
    parser.add_argument("--remat", default="none", help="none | resnets | transformers | both (the release: both)")
    args = parser.parse_args()
    # the fake device count is fixed when JAX starts: set it before the first import
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp

    from controlnext_jax.models.components import COMPONENTS
    from controlnext_jax.sharding.mesh import mesh_from_config
    from controlnext_jax.sharding.rules import DEFAULT_RULES
    from controlnext_jax.testing.torch_checkpoints import model_config
    from controlnext_jax.training.step import TrainConfig, Trainer

    mesh = mesh_from_config({"shape": {"data": args.data, "fsdp": args.fsdp, "tensor": args.tensor}})
    models = {name: COMPONENTS[name].build_abstract(model_config(name, args.model), param_dtype=jnp.float32,
                                                    dtype=jnp.bfloat16)
              for name in ("unet", "controlnext", "vae", "image_encoder")}
    from controlnext_jax.models.unet_blocks import set_remat

    set_remat(models["unet"], args.remat)
    trainer = Trainer(models, TrainConfig(compute_dtype="bfloat16"), mesh=mesh, rules=DEFAULT_RULES)
    frozen = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), trainer.frozen,
                          trainer.frozen_shardings)
    videos = args.data * args.fsdp  # one per batch shard
    shape = (videos, args.frames, args.height, args.width, 3)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=trainer.batch_sharding) for k in ("frames", "poses")}
    key = jax.eval_shape(lambda: jax.random.key(0))
    start = time.perf_counter()
    compiled = trainer.step.lower(trainer.abstract_state(), frozen, batch, key).compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    gib = 1 << 30
    rows = [("arguments", m.argument_size_in_bytes), ("outputs", m.output_size_in_bytes),
            ("aliased (donated)", m.alias_size_in_bytes), ("temporaries", m.temp_size_in_bytes),
            ("generated code", m.generated_code_size_in_bytes)]
    total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    print(f"mesh {dict(mesh.shape)}, {videos} videos of {args.frames}x{args.height}x{args.width}, "
          f"model {args.model}, remat {args.remat}, compiled in {seconds:.0f} s")
    print("| per device | GiB |\n|---|---:|")
    for name, value in rows + [("total (args + outputs - aliased + temps)", total)]:
        print(f"| {name} | {value / gib:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
