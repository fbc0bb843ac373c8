"""The train step: it learns (a few dozen steps on one batch), and its options do what they say.

The optimizer, accumulation, EMA and trainable-set tests run on toy pytrees or without
compiling the networks; only the learning test compiles the tiny model's step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release
from controlnext_jax.training.ema import ema_decay
from controlnext_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from controlnext_jax.training.step import TrainConfig, Trainer, load_training_models
from controlnext_jax.training.trainable import dotted, split_trainable


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return build_random_release(tmp_path_factory.mktemp("tiny_release"), model_configs("tiny"))[1]


# ------------------------------------------------------------------------------- learning


@pytest.mark.slow  # ~60 s on a 2-core CPU: one compile of the tiny model's bf16 train step, 31 steps
def test_a_few_dozen_steps_fit_one_batch(converted):
    # the release's step (bf16 layers, AdamW, clipping at 1, whole UNet + module) at a learning rate
    # that can move a random tiny model within a test; fixed draws, so only the parameters change
    config = TrainConfig(optimizer=OptimizerConfig(learning_rate=1e-3))
    trainer = Trainer(load_training_models(converted, "bfloat16"), config)
    rng = np.random.default_rng(0)
    batch = {"frames": rng.uniform(-1, 1, (1, 3, 64, 64, 3)).astype(np.float32),
             "poses": rng.uniform(0, 1, (1, 3, 64, 64, 3)).astype(np.float32)}
    key = jax.random.key(3)
    state = trainer.init_state()
    losses = []
    for _ in range(31):
        state, metrics = trainer.step(state, trainer.frozen, batch, key)
        losses.append(float(metrics["loss"]))
    print(f"sigma {float(metrics['sigma'][0]):.3g}; loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    assert np.all(np.isfinite(losses))
    assert losses[-1] <= 0.2 * losses[0]
    assert int(state.updates) == 31


# ------------------------------------------------------------------------------- optimizer


def test_default_schedule_is_the_release_constant_rate():
    cfg = OptimizerConfig()
    assert (cfg.learning_rate, cfg.b1, cfg.b2, cfg.weight_decay, cfg.eps, cfg.clip_norm) == (
        1e-5, 0.9, 0.999, 1e-2, 1e-8, 1.0)
    schedule = learning_rate_schedule(cfg)
    # the release's 500 warmup steps were inert under "constant": full rate from step 0
    assert [float(schedule(s)) for s in (0, 1, 499, 500, 10_000)] == pytest.approx([1e-5] * 5)


def test_warmup_and_decay_when_asked():
    schedule = learning_rate_schedule(OptimizerConfig(schedule="cosine", warmup_steps=10, total_steps=110))
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5e-5)
    assert float(schedule(10)) == pytest.approx(1e-5)
    assert float(schedule(60)) == pytest.approx(0.5e-5, rel=1e-3)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        OptimizerConfig(schedule="linear")  # needs total_steps


def test_adamw_step_matches_torch_adamw_with_clipping():
    import torch

    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32) * 3.0
    cfg = OptimizerConfig(learning_rate=1e-2)
    opt = make_optimizer(cfg)
    params = {"w": jnp.asarray(p0)}
    state = opt.init(params)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    for _ in range(3):
        updates, state = opt.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        tp.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        topt.step()
    np.testing.assert_allclose(np.asarray(params["w"]), tp.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_accumulation_applies_the_mean_gradient_every_k_micro_batches():
    opt = make_optimizer(OptimizerConfig(learning_rate=0.1, accumulation_steps=2, clip_norm=None, weight_decay=0.0))
    single = make_optimizer(OptimizerConfig(learning_rate=0.1, clip_norm=None, weight_decay=0.0))
    params = {"w": jnp.ones(3)}
    state, s_state = opt.init(params), single.init(params)
    g1, g2 = {"w": jnp.array([1.0, 2.0, 3.0])}, {"w": jnp.array([3.0, -2.0, 1.0])}
    u1, state = opt.update(g1, state, params)
    assert not bool(opt.has_updated(state)) and float(jnp.abs(u1["w"]).max()) == 0.0
    u2, state = opt.update(g2, state, params)
    assert bool(opt.has_updated(state))
    expected, _ = single.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), s_state, params)
    np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(expected["w"]), rtol=1e-6)


def test_ema_decay_follows_diffusers_warmup_free_rule():
    # first update copies the parameters; then (1 + k) / (10 + k), capped at the decay
    assert float(ema_decay(jnp.array(1), 0.9999)) == 0.0
    assert float(ema_decay(jnp.array(2), 0.9999)) == pytest.approx(2 / 11)
    assert float(ema_decay(jnp.array(10**6), 0.99)) == pytest.approx(0.99)


# ------------------------------------------------------------------------------- trainable sets


def test_trainable_sets_select_by_path(converted):
    from controlnext_jax.checkpoint.store import load_component

    unet = load_component(converted, "unet")
    n_params = len(nnx.to_flat_state(nnx.state(unet, nnx.Param)))

    def names(patterns):
        _, trainable, frozen = split_trainable(unet, patterns)
        t = [dotted(p) for p, _ in nnx.to_flat_state(trainable)]
        f = [dotted(p) for p, _ in nnx.to_flat_state(frozen)]
        assert len(t) + len(f) >= n_params
        return t

    assert len(names(("*",))) == n_params  # the release: the whole UNet
    assert names(()) == []  # the ControlNeXt module alone
    subset = names(("*to_out*", "*to_v*"))  # the release's commented-out selection
    assert subset and all(".to_out." in n or ".to_v." in n for n in subset)
    assert len(subset) < n_params


def test_frozen_unet_stays_put_when_only_the_module_trains(converted):
    trainer = Trainer(load_training_models(converted, "float32"), TrainConfig(unet_patterns=(), compute_dtype="float32"))
    state = trainer.init_state()
    assert jax.tree.leaves(state.trainable["unet"]) == []
    assert len(jax.tree.leaves(state.trainable["controlnext"])) > 0
