"""The JAX training loss and its gradients against the torch reference of the release's loss.

Same tiny random weights (converted by our converter), batch, sigmas, noises and dropout
draws on both sides (controlnext_jax/testing/torch_training.py is written from
docs/release_semantics.md, Training). Float32 on both sides.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from controlnext_jax.checkpoint.torch_layout import param_table, to_torch_layout
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release
from controlnext_jax.testing.torch_training import release_loss
from controlnext_jax.training.draws import Draws
from controlnext_jax.training.loss import diffusion_loss
from controlnext_jax.training.step import TrainConfig, Trainer, load_training_models

B, F, SIZE, LATENT = 2, 3, 64, 8
# ||jax - torch|| / ||torch|| in float32: the loss and every gradient are the same float32
# maths in a different operation order (XLA fusions, conv algorithms); measured 2e-7 on the
# loss and 5e-6 on all UNet + ControlNeXt gradients together, so 1e-4 leaves room without
# hiding a wrong weight, mask or dropout (those move the loss by > 1e-2). It assumes no ReLU
# input of the ControlNeXt module lies within float32 rounding of 0: rounding that flips one
# such ReLU changed the stem's gradients by 0.5% (measured on another seed), which is why
# the test checks its inputs keep a margin (`RELU_MARGIN`) instead of loosening the bound.
PARITY_TOL = 1e-4
RELU_MARGIN = 4e-6  # the float32 rounding of a stem pre-activation was measured at 1.4e-6
INPUT_SEED = 7  # poses whose ControlNeXt ReLU inputs keep that margin at these sigmas
SIGMAS = np.array([0.3, 5.0], np.float32)
# one video drops only the CLIP embedding (r < 0.2), the other only the image latents (0.1 <= r < 0.3)
DROPOUT_R = np.array([0.05, 0.25], np.float32)


def _batch_and_draws(seed: int = INPUT_SEED):
    rng = np.random.default_rng(seed)
    frames = rng.uniform(-1, 1, (B, F, SIZE, SIZE, 3)).astype(np.float32)
    poses = rng.uniform(0, 1, (B, F, SIZE, SIZE, 3)).astype(np.float32)
    hand_weight = np.ones((B, F, SIZE, SIZE), np.float32)
    hand_weight[:, 1:, 10:30, 21:43] = 4.2  # a hand box, not aligned to the 8-px latent cells
    latent = (B, F, LATENT, LATENT, 4)
    draws = Draws(sigma=SIGMAS, noise=rng.standard_normal(latent, np.float32),
                  latent_eps=rng.standard_normal(latent, np.float32),
                  image_noise=rng.standard_normal((B, SIZE, SIZE, 3), np.float32), dropout_r=DROPOUT_R)
    return {"frames": frames, "poses": poses, "hand_weight": hand_weight}, draws


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch_models, converted = build_random_release(tmp_path_factory.mktemp("tiny_release"), model_configs("tiny"))
    trainer = Trainer(load_training_models(converted, "float32"), TrainConfig(compute_dtype="float32"))
    return torch_models, trainer


def _relu_margin(controlnext: torch.nn.Module, poses: np.ndarray) -> float:
    """The smallest |input| of any ReLU of the torch ControlNeXt on these poses and sigmas."""
    mins = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: mins.append(inp[0].abs().min().item()))
             for m in controlnext.modules() if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        controlnext(torch.from_numpy(poses).movedim(-1, -3), torch.from_numpy(0.25 * np.log(SIGMAS)))
    for h in hooks:
        h.remove()
    return min(mins)


def _grad_pairs(models: dict, trainer: Trainer, trainable: dict, grads: dict):
    """(network, torch key, jax gradient, torch gradient) of every trainable parameter, torch layout."""
    merged = trainer.models(trainable, trainer.frozen)._asdict()
    for name in ("unet", "controlnext"):
        jax_grads = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(grads[name])}
        torch_params = dict(models[name].named_parameters())
        for key, slot in param_table(merged[name]).items():
            yield name, key, to_torch_layout(np.asarray(jax_grads[slot.path]), slot.layout), torch_params[key].grad.numpy()


def _rel_err(pairs) -> float:
    num = sum(float(np.sum((j - t) ** 2)) for j, t in pairs)
    return (num / sum(float(np.sum(t ** 2)) for _, t in pairs)) ** 0.5


@pytest.mark.slow  # ~50 s on a 2-core CPU: the tiny release is built and the loss gradient compiled
def test_loss_and_gradients_match_the_torch_reference(release):
    models, trainer = release
    batch, draws = _batch_and_draws()
    assert _relu_margin(models["controlnext"], batch["poses"]) > RELU_MARGIN

    trainable = trainer.init_state().trainable
    loss, aux, grads = trainer.loss_and_grads(trainable, trainer.frozen, batch, draws)
    for m in models.values():
        m.zero_grad()
    ref = release_loss(models, batch["frames"], batch["poses"], scaling_factor=trainer.scaling_factor,
                       hand_weight=batch["hand_weight"],
                       **{k: v for k, v in draws._asdict().items() if k != "crop_u"})  # crop_u: the VAE objective's
    ref.backward()

    loss_err = abs(float(loss) - ref.item()) / abs(ref.item())
    pairs = list(_grad_pairs(models, trainer, trainable, grads))
    grad_err = _rel_err([(j, t) for _, _, j, t in pairs])
    # the ControlNeXt module's on their own: its gradients are ~10x smaller than the UNet's
    cn_err = _rel_err([(j, t) for name, _, j, t in pairs if name == "controlnext"])
    print(f"loss {float(loss):.6g} rel err {loss_err:.2e}; gradients ({len(pairs)} tensors) rel err "
          f"{grad_err:.2e}, ControlNeXt alone {cn_err:.2e}")
    assert loss_err <= PARITY_TOL
    assert grad_err <= PARITY_TOL
    assert cn_err <= PARITY_TOL
    assert aux["per_video"].shape == (B,)


@pytest.mark.slow  # shares the tiny release built above
def test_the_figure_weight_weighs_the_loss_as_the_hand_weight_does(release):
    """`figure_weight` goes through the same pooling and product as the release's hand weight
    (checked against torch above): the same map under either key gives the same loss, and the
    two together multiply."""
    _, trainer = release
    batch, draws = _batch_and_draws()
    weight = batch.pop("hand_weight")
    models = trainer.models(trainer.init_state().trainable, trainer.frozen)

    def loss(**weights) -> float:
        value, _ = diffusion_loss(models, {**batch, **weights}, draws, scaling_factor=trainer.scaling_factor,
                                  dtype=jnp.float32)
        return float(value)

    plain, as_hand, as_figure = loss(), loss(hand_weight=weight), loss(figure_weight=weight)
    both = loss(hand_weight=weight, figure_weight=weight)
    assert as_figure == pytest.approx(as_hand, rel=1e-6)
    assert as_figure > 1.01 * plain  # weights >= 1, some 4.2
    assert both > 1.01 * as_hand  # multiplied, not one of them ignored


@pytest.mark.slow  # shares the tiny release built above
def test_control_scale_weighs_the_control_as_the_torch_reference_does(release):
    """control_scale=s multiplies the control's 0.2 in the UNet, in the loss as in the torch reference
    with the same s; it moves the loss (not ignored), and at s=1 the loss is the release's."""
    models, trainer = release
    batch, draws = _batch_and_draws()
    merged = trainer.models(trainer.init_state().trainable, trainer.frozen)
    draw_args = {k: v for k, v in draws._asdict().items() if k != "crop_u"}
    losses = {}
    for scale in (1.0, 4.0):
        value, _ = diffusion_loss(merged, batch, draws, scaling_factor=trainer.scaling_factor, dtype=jnp.float32,
                                  control_scale=scale)
        with torch.no_grad():
            ref = release_loss(models, batch["frames"], batch["poses"], scaling_factor=trainer.scaling_factor,
                               hand_weight=batch["hand_weight"], control_scale=scale, **draw_args).item()
        assert abs(float(value) - ref) / abs(ref) <= PARITY_TOL, (scale, float(value), ref)
        losses[scale] = float(value)
    assert abs(losses[4.0] - losses[1.0]) > 1e-3 * losses[1.0], losses
