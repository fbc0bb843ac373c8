"""Training on a 4-device CPU mesh (data=2, fsdp=2) is training on one device, with the state really split.

Each check runs in a subprocess started with XLA_FLAGS=--xla_force_host_platform_device_count=4
(the device count is fixed when JAX starts, and the other tests run on one device); the
subprocess is this file run as a script and prints its findings as JSON.

- fast: tiny models initialised onto the mesh equal the host-built ones; a converted
  checkpoint restored onto the mesh (float16 UNet parts cast to float32) equals the host
  load; the train state (parameters, Adam moments, EMA) has the parameters' shardings,
  abstract_state() matches it; put_batch splits a batch over data x fsdp and refuses an
  indivisible one.
- slow: one train step of the tiny model (float32, 2 frames of 64x64, batch 4) on the mesh
  equals the same step on one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RULES_MESH = {"data": 2, "fsdp": 2, "tensor": 1}


def run_worker(task: str, tmp_path: Path) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, __file__, task, str(tmp_path), str(out)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(proc.stdout)
    return json.loads(out.read_text())


def test_state_and_models_live_split_on_the_mesh(tmp_path):
    r = run_worker("placement", tmp_path)
    assert r["devices"] == 4
    # the same random bits whatever the sharding; compiled as one program, XLA fuses the maps from
    # bits to normals and rounds them ~1 ulp differently from op-by-op execution
    assert r["init_max_abs_diff"] < 1e-6
    assert r["unet_parts"] > 1
    assert r["restore_max_abs_diff"] == 0.0  # the same stored values, cast to float32 the same way
    assert r["restored_dtypes"] == ["float32"]
    # a big kernel: split over fsdp on its output channels, each device holding half
    assert r["kernel_spec"] == [None, None, None, "fsdp"]
    assert r["kernel_shard_shape"][-1] * 2 == r["kernel_shape"][-1]
    assert r["restored_kernel_spec"] == r["kernel_spec"]
    # Adam's moments and the EMA follow their parameter; counters replicated
    assert r["moments_follow_params"] and r["ema_follows_params"]
    assert r["counter_spec"] == []
    assert r["abstract_matches_state"]
    assert r["batch_spec"] == [["data", "fsdp"]] and r["batch_shard_rows"] == 1
    assert "batch shards" in r["indivisible_batch_error"]


@pytest.mark.slow  # two compiles of the tiny model's float32 train step (~2 x 60 s on 2 cores)
def test_mesh_step_equals_single_device_step(tmp_path):
    r = run_worker("step", tmp_path)
    print({k: v for k, v in r.items() if k != "spec"})
    # float32 throughout; the mesh sums gradients and statistics across shards in another
    # order than one device does: ~1e-6 relative per reduction, 1e-5 leaves room for the chain
    assert r["loss_single"] == pytest.approx(r["loss_mesh"], rel=1e-5)
    assert r["grad_norm_single"] == pytest.approx(r["grad_norm_mesh"], rel=1e-5)
    # first moments = 0.1 x clipped gradient: the gradients leaf by leaf, relative to the largest
    assert r["mu_max_rel_diff"] < 1e-4
    assert r["param_max_abs_diff"] < 1e-6  # updates are ~lr = 1e-3: agreement to 1e-3 of an update
    assert r["params_changed"]
    assert r["updated_kernel_spec"] == [None, None, None, "fsdp"]


# ----------------------------------------------------------------------------- the subprocess


def _worker(task: str, workdir: Path) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from controlnext_jax.checkpoint.store import FORMAT, PIPELINE_FILE, save_params
    from controlnext_jax.errors import UserError
    from controlnext_jax.sharding.mesh import mesh_from_config, rules_from_config
    from controlnext_jax.testing.torch_checkpoints import model_configs
    from controlnext_jax.training.models import init_training_models, load_training_models
    from controlnext_jax.training.optimizer import OptimizerConfig
    from controlnext_jax.training.step import TrainConfig, Trainer

    mesh = mesh_from_config({"shape": RULES_MESH})
    rules = rules_from_config({"rules": None})
    configs = model_configs("tiny")

    def flat(tree):
        return [np.asarray(x) for x in jax.tree.leaves(tree)]

    def max_abs_diff(a, b):
        return max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(flat(a), flat(b)))

    def spec(x):
        return [list(e) if isinstance(e, tuple) else e for e in x.sharding.spec]

    def kernel(trainable):  # a 3x3 conv of the UNet's first resnet: (3, 3, 32, 32)
        return trainable["unet"]["down_blocks"][0]["resnets"][0]["spatial_res_block"]["conv1"]["kernel"].get_value()

    rng = np.random.default_rng(0)
    result: dict = {"devices": jax.device_count()}
    on_host = init_training_models(configs, "float32", seed=3)
    # a converted checkpoint of these weights, the UNet stored in float16 over several parts
    ckpt = workdir / "ckpt"
    for name, model in on_host.items():
        dtype = np.float16 if name == "unet" else np.float32
        params = [(path, np.asarray(v.get_value()).astype(dtype))
                  for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
        save_params(ckpt / name, params, part_bytes=200_000 if name == "unet" else None)
    (ckpt / PIPELINE_FILE).write_text(json.dumps({"format": FORMAT, "param_dtype": "float32",
                                                  "components": {n: configs[n] for n in on_host}}))
    if task == "placement":
        # random init compiled onto the mesh (the small components: the UNet's takes a minute to compile)
        small = ("controlnext", "image_encoder")
        on_mesh = init_training_models(configs, "float32", seed=3, mesh=mesh, rules=rules, components=small)
        result["init_max_abs_diff"] = max(max_abs_diff(nnx.state(on_mesh[n]), nnx.state(on_host[n])) for n in small)
        restored = load_training_models(ckpt, "float32", mesh=mesh, rules=rules)
        loaded = load_training_models(ckpt, "float32")
        result["unet_parts"] = len(json.loads((ckpt / "unet" / "parts.json").read_text()))
        result["restore_max_abs_diff"] = max(max_abs_diff(nnx.state(restored[n]), nnx.state(loaded[n]))
                                             for n in loaded)
        result["restored_dtypes"] = sorted({str(x.dtype) for n in restored for x in jax.tree.leaves(
            nnx.state(restored[n]))})
        trainer = Trainer(restored, TrainConfig(compute_dtype="float32", ema_decay=0.99), mesh=mesh, rules=rules)
        state = trainer.init_state()
        k = kernel(state.trainable)
        result.update(kernel_spec=spec(k), kernel_shape=list(k.shape),
                      kernel_shard_shape=list(k.addressable_shards[0].data.shape),
                      restored_kernel_spec=spec(restored["unet"].down_blocks[0].resnets[0].spatial_res_block
                                                .conv1.kernel.get_value()))
        params = [spec(x) for x in jax.tree.leaves(state.trainable)]
        inner = state.opt_state.inner_opt_state[1][0]  # chain(clip, adamw) -> adamw -> ScaleByAdamState
        result["moments_follow_params"] = ([spec(x) for x in jax.tree.leaves(inner.mu)] == params
                                           == [spec(x) for x in jax.tree.leaves(inner.nu)]
                                           and any(p != [] for p in params))
        result["ema_follows_params"] = [spec(x) for x in jax.tree.leaves(state.ema)] == params
        result["counter_spec"] = spec(state.updates)
        abstract = trainer.abstract_state()
        result["abstract_matches_state"] = (
            jax.tree.structure(abstract) == jax.tree.structure(state)
            and all(a.shape == x.shape and a.dtype == x.dtype and a.sharding == x.sharding
                    for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(state))))
        batch = trainer.put_batch({"frames": rng.uniform(-1, 1, (4, 2, 64, 64, 3)).astype(np.float32)})
        result["batch_spec"] = spec(batch["frames"])
        result["batch_shard_rows"] = batch["frames"].addressable_shards[0].data.shape[0]
        try:
            trainer.put_batch({"frames": np.zeros((3, 2, 64, 64, 3), np.float32)})
            result["indivisible_batch_error"] = ""
        except UserError as e:
            result["indivisible_batch_error"] = str(e)
    elif task == "step":
        # eps 1e-3 instead of 1e-8: parameters whose gradient is zero up to rounding (a conv bias
        # before a GroupNorm) would take +-lr steps of a random sign under Adam's first update
        config = TrainConfig(compute_dtype="float32", optimizer=OptimizerConfig(learning_rate=1e-3, eps=1e-3))
        batch = {"frames": rng.uniform(-1, 1, (4, 2, 64, 64, 3)).astype(np.float32),
                 "poses": rng.uniform(0, 1, (4, 2, 64, 64, 3)).astype(np.float32)}
        key = jax.random.key(7)
        single = Trainer(load_training_models(ckpt, "float32"), config)
        before = flat(single.init_state().trainable)
        s1, m1 = single.step(single.init_state(), single.frozen, single.put_batch(batch), key)
        sharded = Trainer(load_training_models(ckpt, "float32", mesh=mesh, rules=rules), config, mesh=mesh,
                          rules=rules)
        s2, m2 = sharded.step(sharded.init_state(), sharded.frozen, sharded.put_batch(batch), key)
        mu1, mu2 = (flat(s.opt_state.inner_opt_state[1][0].mu) for s in (s1, s2))
        scale = max(float(np.max(np.abs(m))) for m in mu1)
        result.update(loss_single=float(m1["loss"]), loss_mesh=float(m2["loss"]),
                      grad_norm_single=float(m1["grad_norm"]), grad_norm_mesh=float(m2["grad_norm"]),
                      mu_max_rel_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(mu1, mu2)) / scale,
                      param_max_abs_diff=max_abs_diff(s2.trainable, s1.trainable),
                      params_changed=max(float(np.max(np.abs(a - b))) for a, b in
                                         zip(before, flat(s1.trainable))) > 1e-4,
                      updated_kernel_spec=spec(kernel(s2.trainable)))
    return result


if __name__ == "__main__":
    task, workdir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out.write_text(json.dumps(_worker(task, workdir)))
