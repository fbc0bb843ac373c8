"""Rematerialisation of the UNet blocks: same values and gradients, less stored for the backward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.models.unet_blocks import set_remat
from controlnext_jax.testing.torch_checkpoints import model_config


def _unet(policy: str):
    config = model_config("unet", "tiny")
    _, model_class = COMPONENTS["unet"].classes()
    unet = model_class(config, rngs=nnx.Rngs(0))
    set_remat(unet, policy)
    return unet


def _inputs():
    rng = np.random.default_rng(1)
    b, f, h, w = 1, 3, 8, 8
    return dict(sample=jnp.asarray(rng.normal(size=(b, f, h, w, 8)), jnp.float32),
                timestep=jnp.float32(0.3),
                encoder_hidden_states=jnp.asarray(rng.normal(size=(b, 1, 32)), jnp.float32),
                added_time_ids=jnp.asarray([[6.0, 127.0, 0.02]], jnp.float32))


def _loss_fn(policy: str):
    graphdef, params = nnx.split(_unet(policy))
    inputs = _inputs()

    def loss(p):
        return jnp.mean(jnp.square(nnx.merge(graphdef, p)(**inputs)))

    return loss, params


def _loss_and_grads(policy: str):
    loss, params = _loss_fn(policy)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return value, grads


@pytest.mark.parametrize("policy", ["resnets", "transformers", "both"])
def test_remat_keeps_loss_and_gradients(policy):
    ref_value, ref_grads = _loss_and_grads("none")
    value, grads = _loss_and_grads(policy)
    # the recomputation is the same float32 arithmetic; XLA may fuse it differently, so a few ulp
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    ref, got = jax.tree.leaves(ref_grads), jax.tree.leaves(grads)
    num = np.sqrt(sum(float(jnp.sum(jnp.square(a - b))) for a, b in zip(got, ref)))
    den = np.sqrt(sum(float(jnp.sum(jnp.square(b))) for b in ref))
    assert num / den <= 1e-5, num / den


def _saved_residuals(policy: str, capsys) -> int:
    """How many arrays the backward pass keeps from the forward pass (one line each)."""
    capsys.readouterr()
    print_saved_residuals(*_loss_fn(policy))
    return len(capsys.readouterr().out.splitlines())


def test_remat_stores_less_for_the_backward_pass(capsys):
    # XLA's peak temporary memory shows no gain at the tiny size (one block's internals dominate
    # there), so count what autodiff saves: each policy drops its blocks' activations
    counts = {policy: _saved_residuals(policy, capsys) for policy in ("none", "resnets", "transformers", "both")}
    with capsys.disabled():
        print(f"saved residuals: {counts}")
    assert counts["resnets"] < counts["none"] and counts["transformers"] < counts["none"]
    assert counts["both"] < min(counts["resnets"], counts["transformers"])


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="remat='all'"):
        _unet("all")
