"""A training run from a checked config: build, (resume,) loop, checkpoint, export.

Order of work: every cheap check (run_config.check_run) before a model loads; then the
mesh, the models straight onto it, the Trainer, the checkpointer, the data loader from
the restored position. The loop dispatches one jitted step per micro-batch; the step's
PRNG key is fold_in(key(seed), step), so a resumed run draws exactly what the
uninterrupted run would have, and with the data loader's saved position and the saved
train state its losses are the same. Checkpoints every `checkpoint.every` steps, at the
end, and when the run is stopped (SIGTERM, Ctrl-C): nothing but the steps since the last
checkpoint is ever lost, and a stop leaves a checkpoint of the step it reached.

The run folder is kept when a run fails or is stopped: it is the state `resume=true`
continues from. The exported model (<out>/model) appears only when complete.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import jax
from omegaconf import DictConfig, OmegaConf

from controlnext_jax.atomic_io import check_output
from controlnext_jax.cli import Interrupted, Terminated
from controlnext_jax.errors import UserError
from controlnext_jax.training import run_config
from controlnext_jax.training.checkpointing import TrainCheckpointer, run_record

CHECKPOINTS = "checkpoints"
MODEL = "model"


def prepare_folder(cfg: DictConfig) -> Path:
    """The run folder: new (or replaced with overwrite=true), or existing with resume=true."""
    out = Path(cfg.out).absolute()
    if cfg.resume:
        if not (out / CHECKPOINTS).is_dir():
            raise UserError(f"resume=true: {out} holds no run to resume (no {CHECKPOINTS}/); start it with "
                            "resume=false")
        return out
    out = check_output(out, inputs=run_config.input_paths(cfg), overwrite=cfg.overwrite)
    # several processes share the folder: all check it first, then process 0 alone makes it
    _sync("controlnext_train_checked_run_folder")
    if jax.process_index() == 0:
        if out.exists() and cfg.overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True)
    _sync("controlnext_train_made_run_folder")
    return out


def check_vae_patterns(cfg: DictConfig, patterns) -> None:
    """vae_patterns must select some of the VAE's parameters: checked on its abstract build (shapes
    only), before the run folder exists or any weight loads."""
    from controlnext_jax.checkpoint.store import load_component_config
    from controlnext_jax.models.components import COMPONENTS
    from controlnext_jax.training.trainable import require_vae_matches

    component = COMPONENTS["vae"]
    if cfg.ckpt is not None and "vae" not in (run_config.plain(cfg.from_scratch) or ()):
        config = load_component_config(cfg.ckpt, "vae")
    else:
        config = component.config_from_dict(run_config.plain(cfg.model.vae), source="model.vae")
    require_vae_matches(component.build_abstract(config), patterns)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _time_is_up(started: float, limit: float) -> bool:
    """Whether `limit` seconds have passed since `started`; with several processes, process 0's
    clock decides for all, so every process leaves the loop after the same step."""
    up = time.monotonic() - started >= limit
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        up = bool(multihost_utils.broadcast_one_to_all(np.asarray(up)))
    return up


def build_models(cfg: DictConfig, train_cfg, mesh, rules) -> dict:
    from controlnext_jax.models.unet_blocks import set_remat
    from controlnext_jax.training.models import init_training_models, load_training_models

    from_scratch = tuple(run_config.plain(cfg.from_scratch) or ())
    if cfg.ckpt is None:
        configs = {name: run_config.plain(cfg.model[name]) for name in from_scratch}
        models = init_training_models(configs, train_cfg.compute_dtype, seed=cfg.seed, mesh=mesh, rules=rules)
    else:
        models = load_training_models(cfg.ckpt, train_cfg.compute_dtype, mesh=mesh, rules=rules,
                                      from_scratch=from_scratch, seed=cfg.seed)
    if cfg.init == "zero_residual":
        from controlnext_jax.training.init import zero_residual

        for name in from_scratch:
            zero_residual(name, models[name])
    set_remat(models["unet"], cfg.remat)  # before the Trainer splits the UNet: a static setting
    return models


def scheduler_dict(cfg: DictConfig) -> dict | None:
    if cfg.ckpt is not None:
        from controlnext_jax.checkpoint.store import read_pipeline

        return read_pipeline(cfg.ckpt).get("scheduler")
    return run_config.plain(cfg.model.get("scheduler"))


def train(cfg: DictConfig) -> Path:
    from controlnext_jax.sharding.mesh import initialize_distributed, mesh_from_config, rules_from_config
    from controlnext_jax.sharding.rules import batch_shards
    from controlnext_jax.training.data import TrainingDataLoader
    from controlnext_jax.training.optimizer import learning_rate_schedule
    from controlnext_jax.training.run_log import RunLog
    from controlnext_jax.training.step import Trainer

    checked = run_config.check_run(cfg)
    train_cfg = run_config.train_config(cfg)
    initialize_distributed(bool(cfg.mesh.get("distributed", False)))
    mesh = mesh_from_config(cfg.mesh)
    rules = rules_from_config(cfg.mesh)
    shards = batch_shards(rules, mesh)
    if cfg.data.batch_size % shards:
        raise UserError(f"data.batch_size={cfg.data.batch_size}: must be a multiple of the mesh's {shards} batch "
                        f"shards (data x fsdp of mesh.shape)")
    if train_cfg.objective == "vae":
        check_vae_patterns(cfg, train_cfg.vae_patterns)
    out = prepare_folder(cfg)
    record = run_record(OmegaConf.to_container(cfg, resolve=True))
    if jax.process_index() == 0:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    train_mesh = mesh if mesh.size > 1 else None  # one device: the plain single-device program
    models = build_models(cfg, train_cfg, train_mesh, rules)
    trainer = Trainer(models, train_cfg, mesh=train_mesh, rules=rules)
    del models  # the trainer holds the states; the modules would pin a second reference only
    checkpointer = TrainCheckpointer(out / CHECKPOINTS, save_every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
                                     async_save=cfg.checkpoint.async_save)
    start, position, base_key = 0, None, jax.random.key(cfg.seed)
    latest = checkpointer.latest_step() if cfg.resume else None
    if latest is not None:  # the saved key, so the resumed steps draw what the first run's would have
        state, position, base_key, _ = checkpointer.restore(latest, trainer.abstract_state())
        start = latest
        print(f"[train] resumed from step {start} ({out / CHECKPOINTS / str(start)})")
    else:
        state = trainer.init_state()
    if start >= cfg.steps:
        print(f"[train] already at step {start} of steps={cfg.steps}; nothing to do")
    data_cfg = run_config.data_config(cfg, process_index=jax.process_index(), process_count=jax.process_count())
    validation = None
    if cfg.validation.every and jax.process_count() == 1:
        from controlnext_jax.training.validation_video import ValidationVideo

        validation = ValidationVideo(out, image=cfg.validation.image, pose_video=cfg.validation.pose_video,
                                     first_record=checked["records"][0], height=data_cfg.height,
                                     width=data_cfg.width, frames=cfg.validation.frames,
                                     num_inference_steps=cfg.validation.num_inference_steps,
                                     guidance_scale=cfg.validation.guidance_scale, scheduler=scheduler_dict(cfg),
                                     control_scale=float(cfg.control_scale))
    log = RunLog(out, record=record, every=cfg.log.every, total_steps=cfg.steps, start_step=start,
                 samples_per_step=cfg.data.batch_size, wandb_setting=cfg.log.wandb, project=cfg.log.wandb_project,
                 progress=cfg.log.progress, learning_rate=learning_rate_schedule(train_cfg.optimizer))

    def save(step: int, force: bool) -> bool:
        if any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
            return False  # stopped inside a step, whose input state was donated: the last checkpoint stands
        if checkpointer.save(step, state, data_position=position, rng=base_key, record=record, force=force):
            log.note({"step": step, "checkpoint": str(out / CHECKPOINTS / str(step))})
        return True

    step = start
    stop = StopRequest()
    if position is not None and jax.process_count() > 1:
        # the checkpoint holds process 0's position; every process has consumed as many batches
        # of its own stream (seed + process index)
        position = {**position, "seed": data_cfg.seed}
    loader = TrainingDataLoader(data_cfg, position=position)
    position = loader.state()  # the loader's position after the batches of the steps done so far
    time_limit = cfg.get("time_limit_s")
    loop_started = time.monotonic()
    try:
        while step < cfg.steps:
            if time_limit is not None and step > start and _time_is_up(loop_started, time_limit):
                log.message(f"[train] time_limit_s={time_limit:g} reached after step {step}")
                break
            stop.check()
            batch = trainer.put_batch(next(loader))
            log.step_started()
            state, metrics = trainer.step(state, trainer.frozen, batch, jax.random.fold_in(base_key, step))
            step, position = step + 1, loader.state()
            log.step_done(step, metrics, updates=state.updates)
            save(step, force=False)
            if validation is not None and step % cfg.validation.every == 0:
                path = validation.render(trained_models(trainer, state), step)
                log.note({"step": step, "validation_video": str(path)})
        save(step, force=True)
        checkpointer.wait()
    except (KeyboardInterrupt, Terminated) as stopped:
        saved = save(step, force=True)
        checkpointer.wait()
        status = 130 if isinstance(stopped, KeyboardInterrupt) else 143
        latest = checkpointer.latest_step()
        where = f"checkpoint of step {latest} in {out / CHECKPOINTS}" if latest is not None else "no checkpoint yet"
        raise Interrupted(f"stopped at step {step}{'' if saved else ' (inside a step)'}; {where}; "
                          "resume=true continues", status) from None
    finally:
        stop.restore()
        loader.close()
        log.close()
        checkpointer.close()
    log.message(f"[train] {step} steps; skipped videos: {loader.skipped}")
    if cfg.export.at_end and jax.process_index() == 0:
        from controlnext_jax.training.export import export_inference

        started = time.perf_counter()
        models = trained_models(trainer, state)
        if train_cfg.objective == "vae":
            from controlnext_jax.training.trainable import trains_vae_latents

            if trains_vae_latents(models["vae"], train_cfg.vae_patterns):
                set_measured_scaling_factor(models["vae"], data_cfg, train_cfg.compute_dtype, seed=cfg.seed)
            else:  # the encoder is the checkpoint's: so are its latents and the factor a UNet was trained with
                print(f"[train] VAE scaling_factor kept: {models['vae'].config.scaling_factor:.6g} (the encoder "
                      "did not train)")
        export_inference(out / MODEL, models, base_ckpt=cfg.ckpt, dtype=cfg.export.dtype, record=record,
                         overwrite=True, storage=cfg.export.storage,
                         inference_defaults=run_config.inference_defaults(cfg))
        print(f"[train] exported {out / MODEL} in {time.perf_counter() - started:.1f} s "
              f"({'EMA' if state.ema is not None else 'trained'} weights)")
    return out


class StopRequest:
    """SIGTERM and Ctrl-C between steps: the handlers only note the request and the loop acts on
    it before the next step, so the stop cannot land inside JAX's or orbax's own code (an
    exception raised there, e.g. in a garbage-collection callback, is swallowed)."""

    def __init__(self):
        self.signal = None
        self._previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _note(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.signal = signum

    def check(self) -> None:
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal == signal.SIGTERM:
            raise Terminated()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


SCALING_BATCHES = 16  # batches the exported VAE's scaling factor is measured on


def set_measured_scaling_factor(vae, data_cfg, compute_dtype: str, *, seed: int) -> float:
    """The trained VAE's `config.scaling_factor` := 1 / std of its latents over the first
    SCALING_BATCHES batches of the data (a fresh loader, so the value does not depend on where
    the run stopped or resumed)."""
    import dataclasses
    from itertools import islice

    from controlnext_jax.training.data import TrainingDataLoader
    from controlnext_jax.training.vae_loss import measure_scaling_factor

    loader = TrainingDataLoader(data_cfg)
    try:
        factor = measure_scaling_factor(vae, islice(loader, SCALING_BATCHES), dtype=compute_dtype, seed=seed)
    finally:
        loader.close()
    vae.config = dataclasses.replace(vae.config, scaling_factor=factor)
    print(f"[train] VAE scaling_factor measured: {factor:.6g} (1 / std of the latents over "
          f"{SCALING_BATCHES} batches)")
    return factor


def trained_models(trainer, state) -> dict:
    """The networks with the trained weights, or their EMA when the run keeps one."""
    trainable = state.ema if state.ema is not None else state.trainable
    return trainer.models(trainable, trainer.frozen)._asdict()
