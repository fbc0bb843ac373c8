"""The train state and one jitted train step over `nnx.split` state (docs/release_semantics.md, Training).

Models are built with float32 parameters (the master weights, which the optimizer updates)
and a compute dtype for their layers (bfloat16 by default, the release's mixed precision):
every matmul and convolution runs in the compute dtype, normalisation statistics, the
scheduler maths and the loss in float32. The step closes over the graph definitions and
takes the trainable and frozen states as arguments, so one compiled program serves every
step of a shape; the train state is donated.

With a mesh (docs/scaling.md) every array has a NamedSharding derived from the parameters'
logical axes under the rules: trainable, frozen and EMA parameters and the optimizer's
moments (which carry their parameter's annotation, so they follow its sharding); counters
are replicated; batches are split over (data, fsdp) on their leading axis. The step is
compiled with these as explicit in/out shardings, so the state keeps its layout step after
step and XLA inserts the FSDP gathers and gradient reductions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from controlnext_jax.errors import UserError
from controlnext_jax.sharding.rules import DEFAULT_RULES, Rules, batch_shards, batch_spec, param_shardings
from controlnext_jax.training.draws import Draws, draw
from controlnext_jax.training.dropout import CONDITIONING_DROPOUT_PROB
from controlnext_jax.training.ema import ema_update
from controlnext_jax.training.loss import Models, diffusion_loss
from controlnext_jax.training.models import (
    COMPONENT_NAMES,
    load_training_models,  # noqa: F401  (its former home)
)
from controlnext_jax.training.optimizer import OptimizerConfig, make_optimizer
from controlnext_jax.training.sigmas import CosineInterpolated
from controlnext_jax.training.trainable import RELEASE_UNET_PATTERNS, require_vae_matches, split_trainable
from controlnext_jax.training.vae_loss import DEFAULT_KL_WEIGHT, vae_loss

OBJECTIVES = ("diffusion", "vae")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    unet_patterns: tuple[str, ...] = RELEASE_UNET_PATTERNS  # () trains the ControlNeXt module alone
    compute_dtype: str = "bfloat16"  # must be the dtype the models' layers were built with
    sigma_sampler: Any = field(default_factory=CosineInterpolated)
    dropout_prob: float = CONDITIONING_DROPOUT_PROB
    control_scale: float = 1.0  # diffusion: the pose control's weight, x 0.2 (the release: 1.0)
    ema_decay: float | None = None  # e.g. 0.9999 (diffusers' EMAModel default); None: no EMA
    # diffusion: the release's loss, the ControlNeXt module + UNet patterns train; vae: the VAE
    # alone on reconstruction + KL (training/vae_loss.py), the first stage of a from-scratch model
    objective: str = "diffusion"
    train_image_encoder: bool = False  # diffusion: the CLIP tower trains too (a from-scratch model)
    kl_weight: float = DEFAULT_KL_WEIGHT  # vae: weight of the mean KL against the mean L1
    vae_crop: tuple[int, int] | None = None  # vae: reconstruct random (height, width) windows; None: whole frames
    # vae: which VAE parameters train; ("decoder.*",) keeps the encoder, hence the latent space a
    # diffusion model was trained on, and improves only how latents become pixels
    vae_patterns: tuple[str, ...] = ("*",)

    def trainable_patterns(self) -> dict[str, tuple[str, ...]]:
        """{component: parameter globs that train}; the other components are frozen whole."""
        if self.objective == "vae":
            return {"vae": tuple(self.vae_patterns)}
        patterns = {"unet": tuple(self.unet_patterns), "controlnext": ("*",)}
        if self.train_image_encoder:
            patterns["image_encoder"] = ("*",)
        return patterns


class TrainState(NamedTuple):
    trainable: dict  # {"unet": State, "controlnext": State} (TrainConfig.trainable_patterns), float32
    opt_state: Any
    ema: dict | None  # like `trainable`, or None
    updates: jax.Array  # optimizer updates applied so far (micro-batches / accumulation_steps)


def _place(tree, shardings):
    """device_put every array of `tree`; abstract models (`nnx.eval_shape`, ShapeDtypeStruct leaves)
    stay abstract, so a trainer over them can lower and compile the step without any weights."""
    if all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree)):
        return tree
    return jax.device_put(tree, shardings)


class Trainer:
    """models: {"unet", "controlnext", "vae", "image_encoder"} nnx modules (float32 parameters).
    What trains follows `config.trainable_patterns()` (the module and UNet patterns, or the VAE
    alone under the vae objective); the state's `trainable` holds those components only.

    `init_state()` -> TrainState; `step(state, trainer.frozen, batch, key)` -> (state, metrics),
    jitted; `loss_and_grads(trainable, trainer.frozen, batch, draws)` -> (loss, aux, grads), jitted;
    `models(trainable, frozen)` the merged networks (e.g. to export). The frozen states are
    arguments, not constants of the compiled program, so it does not embed the weights.

    `mesh` (a (data, fsdp, tensor) `jax.sharding.Mesh`, controlnext_jax.sharding.mesh) and
    `rules` (default: `sharding.rules.DEFAULT_RULES`) shard everything; the models are best
    built onto the mesh already (training.models), else they are moved there. Then
    `put_batch(host_batch)` places a batch, `abstract_state()` describes the state with its
    shardings (an orbax restore target)."""

    def __init__(self, models: dict[str, nnx.Module], config: TrainConfig = TrainConfig(), *,
                 scaling_factor: float | None = None, mesh=None, rules: Rules | None = None):
        self.config = config
        self.mesh = mesh
        self.rules = (rules or DEFAULT_RULES) if mesh is not None else None
        self.dtype = jnp.dtype(config.compute_dtype)
        self.vae_config = models["vae"].config
        self.scaling_factor = scaling_factor or self.vae_config.scaling_factor
        if config.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective={config.objective!r}; allowed: {list(OBJECTIVES)}")
        self._graphdefs, self._initial, self.frozen = {}, {}, {}
        if config.objective == "vae":
            require_vae_matches(models["vae"], config.vae_patterns)
        for name, patterns in config.trainable_patterns().items():
            self._graphdefs[name], self._initial[name], self.frozen[name] = split_trainable(models[name], patterns)
        for name in COMPONENT_NAMES:
            if name not in self._initial:
                self._graphdefs[name], self.frozen[name] = nnx.split(models[name])
        self.optimizer = make_optimizer(config.optimizer)
        abstract = jax.eval_shape(self._fresh_state, self._initial)
        if mesh is None:
            device = SingleDeviceSharding(jax.devices()[0])
            self.state_shardings = jax.tree.map(lambda _: device, abstract)
            # explicit shardings: a state restored from a checkpoint (committed to the device) and a
            # fresh one (not committed) then lower to the same program, which the persistent
            # compilation cache serves to a resumed run instead of compiling it again
            self.step = jax.jit(self._step, donate_argnums=0, in_shardings=device, out_shardings=device)
            self._init_state = jax.jit(self._fresh_state, out_shardings=device)
        else:
            self.state_shardings = param_shardings(abstract, self.rules, mesh)
            self.frozen_shardings = param_shardings(self.frozen, self.rules, mesh)
            self.batch_sharding = NamedSharding(mesh, batch_spec(self.rules))
            replicated = NamedSharding(mesh, PartitionSpec())
            # no copy when the models were built onto the mesh already (training.models)
            self._initial = _place(self._initial, param_shardings(self._initial, self.rules, mesh))
            self.frozen = _place(self.frozen, self.frozen_shardings)
            self.step = jax.jit(self._step, donate_argnums=0,
                                in_shardings=(self.state_shardings, self.frozen_shardings, self.batch_sharding,
                                              replicated),
                                out_shardings=(self.state_shardings, replicated))
            self._init_state = jax.jit(self._fresh_state, out_shardings=self.state_shardings)
        self._abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                      abstract, self.state_shardings)
        self.loss_and_grads = jax.jit(self._loss_and_grads)

    # ------------------------------------------------------------------ state

    def _fresh_state(self, initial: dict) -> TrainState:
        trainable = jax.tree.map(jnp.copy, initial)
        ema = jax.tree.map(lambda x: x.astype(jnp.float32), trainable) if self.config.ema_decay else None
        return TrainState(trainable, self.optimizer.init(trainable), ema, jnp.zeros((), jnp.int32))

    def init_state(self) -> TrainState:
        """The initial state, computed in place on the devices (each its own shards)."""
        return self._init_state(self._initial)

    def abstract_state(self) -> TrainState:
        """The TrainState as `jax.ShapeDtypeStruct`s with their `.sharding`: what a restore needs as target."""
        return self._abstract

    def put_batch(self, batch: dict) -> dict:
        """This host's part of a batch (numpy, leading axis = videos) -> global arrays split over (data, fsdp).

        One process: the whole batch. Several: each passes its own consecutive slice of the global
        batch (global batch / process count videos), as its data loader shards it."""
        if self.mesh is None:
            return {k: jnp.asarray(v) for k, v in batch.items()}
        shards = batch_shards(self.rules, self.mesh)
        out = {}
        for name, value in batch.items():
            value = np.asarray(value)
            total = value.shape[0] * jax.process_count()
            if total % shards:
                raise UserError(f"batch: {total} videos ({name}) do not split over the mesh's {shards} batch shards "
                                f"(data x fsdp); use a multiple of {shards}")
            out[name] = jax.make_array_from_process_local_data(self.batch_sharding, value)
        return out

    def models(self, trainable: dict, frozen: dict) -> Models:
        merged = {name: nnx.merge(self._graphdefs[name], *((trainable[name],) if name in trainable else ()),
                                  frozen[name])
                  for name in COMPONENT_NAMES}
        return Models(**merged)

    def draw(self, key: jax.Array, batch: dict) -> Draws:
        b, f, h, w, _ = batch["frames"].shape
        factor = 2 ** (len(self.vae_config.block_out_channels) - 1)  # the VAE's downsampling
        return draw(key, batch=b, frames=f, height=h, width=w, latent_hw=(h // factor, w // factor),
                    latent_channels=self.vae_config.latent_channels, sigma_sampler=self.config.sigma_sampler)

    # ------------------------------------------------------------------ compiled functions

    def _loss(self, trainable: dict, frozen: dict, batch: dict, draws: Draws):
        if self.config.objective == "vae":
            return vae_loss(self.models(trainable, frozen).vae, batch["frames"], draws.latent_eps,
                            kl_weight=self.config.kl_weight, dtype=self.dtype, crop=self.config.vae_crop,
                            crop_u=draws.crop_u, weight=batch.get("figure_weight"))
        return diffusion_loss(self.models(trainable, frozen), batch, draws, scaling_factor=self.scaling_factor,
                              dtype=self.dtype, dropout_prob=self.config.dropout_prob,
                              control_scale=self.config.control_scale)

    def _loss_and_grads(self, trainable: dict, frozen: dict, batch: dict, draws: Draws):
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(trainable, frozen, batch, draws)
        return loss, aux, grads

    def _step(self, state: TrainState, frozen: dict, batch: dict, key: jax.Array):
        draws = self.draw(key, batch)
        if self.mesh is not None:  # every draw is per video: split like the batch
            draws = jax.lax.with_sharding_constraint(draws, self.batch_sharding)
        loss, aux, grads = self._loss_and_grads(state.trainable, frozen, batch, draws)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        applied = self.optimizer.has_updated(opt_state)  # False on the first k-1 micro-batches
        count = state.updates + applied.astype(jnp.int32)
        ema = state.ema
        if ema is not None:
            moved = ema_update(ema, trainable, count, self.config.ema_decay)
            ema = jax.tree.map(lambda new, old: jnp.where(applied, new, old), moved, ema)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "sigma": draws.sigma, **aux}
        return TrainState(trainable, opt_state, ema, count), metrics
