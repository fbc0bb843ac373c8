"""Training checkpoints (save, rotate, resume, skip what a killed writer left) and the export
of trained weights to the inference format and on to the PyTorch layouts.

The tiny model's train state (float32; the ControlNeXt module, the UNet's conv_in and an EMA
trained) goes through six steps of a stand-in step that moves every parameter, optimizer
moment and counter and donates the state as the real step does, with a checkpoint every two
steps and the last two kept; the mechanics tests share that run. The real train step compiles
for most of a minute on a 2-core CPU, so the test that a resumed run reproduces the
uninterrupted one's losses is `slow`. A restore onto a two-device mesh runs in a fresh process
with two CPU devices.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file as load_safetensors

from controlnext_jax import load_pipeline
from controlnext_jax.checkpoint.store import read_pipeline
from controlnext_jax.checkpoint.torch_layout import param_table, to_torch_layout
from controlnext_jax.commands.export import main as export_command
from controlnext_jax.errors import UserError
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release
from controlnext_jax.training import export as training_export
from controlnext_jax.training.checkpointing import TrainCheckpointer, run_record
from controlnext_jax.training.export import default_scheduler, export_inference
from controlnext_jax.training.optimizer import OptimizerConfig
from controlnext_jax.training.step import TrainConfig, Trainer, load_training_models

STEPS = 6
RECORD = run_record({"model": "tiny", "train": {"learning_rate": 1e-3, "betas": (0.9, 0.999)}})


def batch_at(index: int) -> dict:
    """The data loader's item `index`: fresh random frames and poses, the same for every run."""
    rng = np.random.default_rng(1000 + index)
    return {"frames": rng.uniform(-1, 1, (1, 2, 64, 64, 3)).astype(np.float32),
            "poses": rng.uniform(0, 1, (1, 2, 64, 64, 3)).astype(np.float32)}


def train_step(trainer, state, rng, index: int):
    rng, key = jax.random.split(rng)
    state, metrics = trainer.step(state, trainer.frozen, batch_at(index), key)
    return state, rng, float(metrics["loss"])


def _moved(state, t):
    """Every float leaf moved by an amount that depends on the step `t`, every counter + 1 (no
    random draws: threefry per leaf would compile for most of a minute)."""
    return jax.tree.map(lambda x: x * 0.999 + 1e-3 * t if jnp.issubdtype(x.dtype, jnp.floating) else x + 1, state)


stand_in_step = jax.jit(_moved, donate_argnums=0)  # donates the state, as Trainer.step does


def host_copy(tree):
    """Copies on the host: the step donates the state's buffers."""
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def assert_bit_equal(actual, expected):
    a, e = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected) and len(a) == len(e) > 0
    for x, y in zip(a, e):
        x = np.asarray(x)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return build_random_release(tmp_path_factory.mktemp("tiny_release"), model_configs("tiny"))[1]


@pytest.fixture(scope="module")
def trainer(converted):
    config = TrainConfig(optimizer=OptimizerConfig(learning_rate=1e-3), unet_patterns=("*conv_in*",),
                         compute_dtype="float32", ema_decay=0.99)
    return Trainer(load_training_models(converted, "float32"), config)


def initial_state(trainer):
    state = trainer.init_state()
    # with float32 parameters init_state's EMA arrays may be the trainable arrays themselves, and
    # the step donates both: give the EMA its own buffers
    state = state._replace(ema=jax.tree.map(jnp.copy, state.ema))
    # placed explicitly (committed), as a restore places them: otherwise a resumed run's
    # arguments differ in commitment and the step compiles a second time
    return jax.device_put((state, jax.random.key(0)), jax.devices()[0])


@pytest.fixture(scope="module")
def run(converted, trainer, tmp_path_factory):
    state, rng = initial_state(trainer)
    directory = tmp_path_factory.mktemp("run") / "checkpoints"
    ckpt = TrainCheckpointer(directory, save_every=2, keep=2, log=quiet)
    saved, snapshots = [], {}
    for step in range(1, STEPS + 1):
        rng, _ = jax.random.split(rng)
        state = stand_in_step(state, jnp.float32(step))
        if ckpt.save(step, state, data_position={"next_index": step}, rng=rng, record=RECORD):
            saved.append(step)
            snapshots[step] = (host_copy(state), np.array(jax.random.key_data(rng)))
        # the next step donates `state` while the checkpoint may still be writing
    ckpt.wait()
    ckpt.close()
    return SimpleNamespace(trainer=trainer, directory=directory, saved=saved, snapshots=snapshots,
                           state=state, rng=rng, converted=converted)


def test_saves_every_two_steps_and_keeps_the_last_two(run):
    assert run.saved == [2, 4, 6]
    assert sorted(os.listdir(run.directory)) == ["4", "6"]
    ckpt = TrainCheckpointer(run.directory, save_every=2, keep=2, log=quiet)
    assert ckpt.latest_step() == 6 and ckpt.removed == []
    ckpt.close()


def test_restore_is_bit_exact(run):
    ckpt = TrainCheckpointer(run.directory, save_every=2, keep=2, log=quiet)
    state, position, rng, record = ckpt.restore(4, run.trainer.abstract_state())
    ckpt.close()
    saved_state, saved_key = run.snapshots[4]
    assert_bit_equal(state, saved_state)  # parameters, optimizer state, EMA, update count
    assert state.ema is not None and int(state.updates) == int(saved_state.updates) != 0
    assert np.array_equal(jax.random.key_data(rng), saved_key) and jax.random.key_impl(rng) == "threefry2x32"
    assert position == {"next_index": 4}
    assert record["config"]["train"]["betas"] == [0.9, 0.999] and record["code_version"].startswith("controlnext-jax")
    assert record["config_sha256"] == run_record(record["config"])["config_sha256"] == RECORD["config_sha256"]


@pytest.mark.slow  # ~50 s on a 2-core CPU: one compile of the tiny model's float32 train step
def test_resumed_training_reproduces_the_uninterrupted_run(trainer, tmp_path):
    state, rng = initial_state(trainer)
    ckpt = TrainCheckpointer(tmp_path / "checkpoints", save_every=2, keep=2, log=quiet)
    losses = []
    for step in range(1, 5):
        state, rng, loss = train_step(trainer, state, rng, step - 1)
        losses.append(loss)
        ckpt.save(step, state, data_position={"next_index": step}, rng=rng, record=RECORD)
    ckpt.wait()
    final = host_copy(state)
    state, position, rng, _ = ckpt.restore(2, trainer.abstract_state())
    ckpt.close()
    resumed = []
    for step in range(3, 5):
        state, rng, loss = train_step(trainer, state, rng, position["next_index"])
        position = {"next_index": step}
        resumed.append(loss)
    # the same compiled step on the same inputs: exactly equal, not merely close
    assert resumed == losses[2:]
    assert_bit_equal(state, final)


@pytest.fixture(scope="module")
def held_write(run, tmp_path_factory):
    """Step 8 saved with its metadata write held back: what the folder looks like while orbax
    writes, kept as a copy (the leftover of a writer killed at that moment)."""
    root = tmp_path_factory.mktemp("held")
    gate = threading.Event()
    original = ocp.JsonCheckpointHandler._save_fn

    async def held_save_fn(self, item, directory):
        await asyncio.to_thread(gate.wait, 30)  # a blocking save would sit here for 30 s
        await original(self, item, directory)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ocp.JsonCheckpointHandler, "_save_fn", held_save_fn)
        ckpt = TrainCheckpointer(root / "checkpoints", save_every=2, keep=2, log=quiet)
        start = time.perf_counter()
        started = ckpt.save(8, run.state, data_position={"next_index": 8}, rng=run.rng, record=RECORD)
        elapsed = time.perf_counter() - start
        during = ckpt.latest_step(), sorted(os.listdir(root / "checkpoints"))
        leftover = root / "leftover"
        if (root / "checkpoints" / "8.orbax-checkpoint-tmp").is_dir():  # else the test below fails
            shutil.copytree(root / "checkpoints" / "8.orbax-checkpoint-tmp", leftover)
        gate.set()
        ckpt.wait()
        after = ckpt.latest_step(), sorted(os.listdir(root / "checkpoints"))
        ckpt.close()
    return SimpleNamespace(started=started, elapsed=elapsed, during=during, after=after, leftover=leftover)


def test_save_returns_while_the_write_is_in_flight(held_write):
    assert held_write.started and held_write.elapsed < 15
    assert held_write.during == (None, ["8.orbax-checkpoint-tmp"])  # not complete, not listed
    assert held_write.after == (8, ["8"])  # wait() committed it


def test_incomplete_checkpoints_are_skipped_and_removed(run, held_write, tmp_path):
    directory = tmp_path / "crashed"
    shutil.copytree(run.directory, directory)
    shutil.copytree(held_write.leftover, directory / "8.orbax-checkpoint-tmp")  # killed during the write
    shutil.copytree(directory / "6", directory / "10")
    (directory / "10" / "commit_success.txt").unlink()  # killed before the commit marker (object stores)
    messages = []
    ckpt = TrainCheckpointer(directory, save_every=2, keep=2, log=messages.append)
    assert sorted(p.name for p in ckpt.removed) == ["10", "8.orbax-checkpoint-tmp"] and len(messages) == 2
    assert sorted(os.listdir(directory)) == ["4", "6"]
    assert ckpt.latest_step() == 6
    state, position, rng, _ = ckpt.restore(None, run.trainer.abstract_state())
    ckpt.close()
    assert_bit_equal(state, run.snapshots[6][0])
    assert position == {"next_index": 6} and np.array_equal(jax.random.key_data(rng), run.snapshots[6][1])


def test_a_checkpoint_of_another_configuration_is_a_one_line_user_error(run):
    ckpt = TrainCheckpointer(run.directory, save_every=2, keep=2, log=quiet)
    abstract = run.trainer.abstract_state()
    # a wider ControlNeXt module: one parameter of another shape
    path, leaf = jax.tree_util.tree_flatten_with_path(abstract.trainable["controlnext"])[0][0]
    wider = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.ShapeDtypeStruct((*x.shape[:-1], x.shape[-1] * 2), x.dtype, sharding=x.sharding)
        if p == path else x, abstract.trainable["controlnext"])
    cases = [(abstract._replace(trainable={**abstract.trainable, "controlnext": wider}), "differ"),
             (abstract._replace(ema=None), "not in this run")]  # a run without EMA
    for target, what in cases:
        with pytest.raises(UserError) as info:
            ckpt.restore(6, target)
        message = str(info.value)
        assert "\n" not in message and str(run.directory / "6") in message and what in message
    with pytest.raises(UserError, match="no complete checkpoint of step 2"):
        ckpt.restore(2, abstract)
    ckpt.close()


def trained_params(module: nnx.Module) -> dict:
    return {path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def test_export_loads_for_inference_and_exports_to_pytorch(run, tmp_path):
    models = run.trainer.models(run.state.trainable, run.trainer.frozen)
    out = export_inference(tmp_path / "trained", models, base_ckpt=run.converted, record={"step": STEPS},
                           log=quiet)
    base, meta = read_pipeline(run.converted), read_pipeline(out)
    assert meta["scheduler"] == base["scheduler"] and meta["feature_extractor"] == base["feature_extractor"]
    assert meta["source_configs"] == base["source_configs"] and meta["training"]["record"] == {"step": STEPS}

    pipeline = load_pipeline(out, compilation_cache_dir=None)
    ours = {name: trained_params(getattr(models, name)) for name in ("unet", "controlnext")}
    for name, params in ours.items():
        loaded = dict(nnx.to_flat_state(nnx.state(pipeline._params[name], nnx.Param)))
        assert sorted(loaded) == sorted(params)
        for path, value in params.items():
            assert np.array_equal(np.asarray(loaded[path].get_value()), value), (name, path)
    # the trained conv_in, not the base one, was exported
    conv_in = ("conv_in", "kernel")
    base_unet = load_training_models(run.converted, "float32")["unet"]
    assert not np.array_equal(trained_params(base_unet)[conv_in], ours["unet"][conv_in])

    torch_out = tmp_path / "torch"
    export_command([f"ckpt={out}", f"out={torch_out}"])
    for name, exported in (("unet", load_safetensors(torch_out / "unet" / "diffusion_pytorch_model.safetensors")),
                           ("controlnext", {k: v.numpy() for k, v in torch.load(
                               torch_out / "controlnet.bin", weights_only=True).items()})):
        table = param_table(getattr(models, name))
        assert sorted(exported) == sorted(table)
        for key, slot in table.items():
            assert np.array_equal(exported[key], to_torch_layout(ours[name][slot.path], slot.layout)), key
    from diffusers import UNetSpatioTemporalConditionModel

    reloaded = UNetSpatioTemporalConditionModel.from_pretrained(torch_out / "unet").state_dict()
    assert np.array_equal(reloaded["conv_in.weight"].numpy(), to_torch_layout(ours["unet"][conv_in], "conv"))


def test_export_from_scratch_defaults_and_interrupted_export_leaves_nothing(run, tmp_path, monkeypatch):
    models = run.trainer.models(run.state.trainable, run.trainer.frozen)
    out = export_inference(tmp_path / "scratch", models, dtype="bfloat16", log=quiet)
    meta = read_pipeline(out)
    assert meta["scheduler"] == default_scheduler() and meta["source_configs"] == {}
    assert meta["param_dtype"] == "bfloat16" and meta["training"]["base_ckpt"] is None
    pipeline = load_pipeline(out, "bfloat16", compilation_cache_dir=None)
    assert pipeline.scheduler.sigma_max == 700.0

    written = []

    def failing_save_params(folder, params, **kwargs):
        if written:
            raise KeyboardInterrupt  # interrupted while writing the second component
        written.append(folder)
        return save_params(folder, params, **kwargs)

    save_params = training_export.save_params
    monkeypatch.setattr(training_export, "save_params", failing_save_params)
    with pytest.raises(KeyboardInterrupt):
        export_inference(tmp_path / "interrupted", models, log=quiet)
    assert written and sorted(os.listdir(tmp_path)) == ["scratch"]
    assert not Path(tmp_path / "interrupted").exists()


MESH_RESTORE = """
import jax, jax.numpy as jnp, numpy as np, optax, sys
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from controlnext_jax.training.checkpointing import TrainCheckpointer
from controlnext_jax.training.step import TrainState

trainable = {"unet": nnx.state(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.Param),
             "controlnext": nnx.state(nnx.Linear(2, 6, rngs=nnx.Rngs(1)), nnx.Param)}
state = TrainState(trainable, optax.adam(1e-3).init(trainable), None, jnp.ones((), jnp.int32))
ckpt = TrainCheckpointer(sys.argv[1], save_every=1, keep=1, log=lambda *_: None)
ckpt.save(1, state, data_position={}, rng=jax.random.key(1))  # written from one device
ckpt.wait()
mesh = Mesh(np.array(jax.devices()), ("fsdp",))
target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
    mesh, P(None, "fsdp") if x.ndim == 2 else P())), state)
restored, _, rng, _ = ckpt.restore(1, target)
ckpt.close()
for new, old, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(target)):
    assert new.sharding == want.sharding and np.array_equal(np.asarray(new), np.asarray(old))
    if new.ndim == 2:  # each device holds its half of the columns, never the whole array
        assert [s.data.shape for s in new.addressable_shards] == [(new.shape[0], new.shape[1] // 2)] * 2
assert rng.sharding == NamedSharding(mesh, P()) and len(jax.devices()) == 2
print("ok")
"""


def test_restore_places_the_arrays_on_the_mesh(tmp_path):
    # a fresh process: the CPU's device count is fixed when JAX starts
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", MESH_RESTORE, str(tmp_path / "checkpoints")], env=env,
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
