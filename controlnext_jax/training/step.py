"""The train state and one jitted train step over `nnx.split` state (docs/release_semantics.md, Training).

Models are built with float32 parameters (the master weights, which the optimizer updates)
and a compute dtype for their layers (bfloat16 by default, the release's mixed precision):
every matmul and convolution runs in the compute dtype, normalisation statistics, the
scheduler maths and the loss in float32. The step closes over the graph definitions and
takes the trainable and frozen states as arguments, so one compiled program serves every
step of a shape; the train state is donated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from controlnext_jax.training.draws import Draws, draw
from controlnext_jax.training.dropout import CONDITIONING_DROPOUT_PROB
from controlnext_jax.training.ema import ema_update
from controlnext_jax.training.loss import Models, diffusion_loss
from controlnext_jax.training.optimizer import OptimizerConfig, make_optimizer
from controlnext_jax.training.sigmas import CosineInterpolated
from controlnext_jax.training.trainable import RELEASE_UNET_PATTERNS, split_trainable


@dataclass(frozen=True)
class TrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    unet_patterns: tuple[str, ...] = RELEASE_UNET_PATTERNS  # () trains the ControlNeXt module alone
    compute_dtype: str = "bfloat16"  # must be the dtype the models' layers were built with
    sigma_sampler: Any = field(default_factory=CosineInterpolated)
    dropout_prob: float = CONDITIONING_DROPOUT_PROB
    ema_decay: float | None = None  # e.g. 0.9999 (diffusers' EMAModel default); None: no EMA


class TrainState(NamedTuple):
    trainable: dict  # {"unet": State, "controlnext": State}, float32
    opt_state: Any
    ema: dict | None  # like `trainable`, or None
    updates: jax.Array  # optimizer updates applied so far (micro-batches / accumulation_steps)


def load_training_models(ckpt, compute_dtype: str = "bfloat16") -> dict[str, nnx.Module]:
    """The four components of a converted checkpoint with float32 parameters, layers in `compute_dtype`."""
    from controlnext_jax.checkpoint.store import load_component

    return {name: load_component(ckpt, name, param_dtype=jnp.float32, dtype=jnp.dtype(compute_dtype))
            for name in ("unet", "controlnext", "vae", "image_encoder")}


class Trainer:
    """models: {"unet", "controlnext", "vae", "image_encoder"} nnx modules (float32 parameters).

    `init_state()` -> TrainState; `step(state, trainer.frozen, batch, key)` -> (state, metrics),
    jitted; `loss_and_grads(trainable, trainer.frozen, batch, draws)` -> (loss, aux, grads), jitted;
    `models(trainable, frozen)` the merged networks (e.g. to export). The frozen states are
    arguments, not constants of the compiled program, so it does not embed the weights."""

    def __init__(self, models: dict[str, nnx.Module], config: TrainConfig = TrainConfig(), *,
                 scaling_factor: float | None = None):
        self.config = config
        self.dtype = jnp.dtype(config.compute_dtype)
        self.vae_config = models["vae"].config
        self.scaling_factor = scaling_factor or self.vae_config.scaling_factor
        self._graphdefs, self._initial, self.frozen = {}, {}, {}
        for name, patterns in (("unet", config.unet_patterns), ("controlnext", ("*",))):
            self._graphdefs[name], self._initial[name], self.frozen[name] = split_trainable(models[name], patterns)
        for name in ("vae", "image_encoder"):
            self._graphdefs[name], self.frozen[name] = nnx.split(models[name])
        self.optimizer = make_optimizer(config.optimizer)
        self.step = jax.jit(self._step, donate_argnums=0)
        self.loss_and_grads = jax.jit(self._loss_and_grads)

    # ------------------------------------------------------------------ state

    def init_state(self) -> TrainState:
        trainable = jax.tree.map(jnp.copy, self._initial)
        ema = jax.tree.map(lambda x: x.astype(jnp.float32), trainable) if self.config.ema_decay else None
        return TrainState(trainable, self.optimizer.init(trainable), ema, jnp.zeros((), jnp.int32))

    def models(self, trainable: dict, frozen: dict) -> Models:
        g = self._graphdefs
        return Models(unet=nnx.merge(g["unet"], trainable["unet"], frozen["unet"]),
                      controlnext=nnx.merge(g["controlnext"], trainable["controlnext"], frozen["controlnext"]),
                      vae=nnx.merge(g["vae"], frozen["vae"]),
                      image_encoder=nnx.merge(g["image_encoder"], frozen["image_encoder"]))

    def draw(self, key: jax.Array, batch: dict) -> Draws:
        b, f, h, w, _ = batch["frames"].shape
        factor = 2 ** (len(self.vae_config.block_out_channels) - 1)  # the VAE's downsampling
        return draw(key, batch=b, frames=f, height=h, width=w, latent_hw=(h // factor, w // factor),
                    latent_channels=self.vae_config.latent_channels, sigma_sampler=self.config.sigma_sampler)

    # ------------------------------------------------------------------ compiled functions

    def _loss(self, trainable: dict, frozen: dict, batch: dict, draws: Draws):
        return diffusion_loss(self.models(trainable, frozen), batch, draws, scaling_factor=self.scaling_factor,
                              dtype=self.dtype, dropout_prob=self.config.dropout_prob)

    def _loss_and_grads(self, trainable: dict, frozen: dict, batch: dict, draws: Draws):
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(trainable, frozen, batch, draws)
        return loss, aux, grads

    def _step(self, state: TrainState, frozen: dict, batch: dict, key: jax.Array):
        draws = self.draw(key, batch)
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
