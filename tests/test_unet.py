"""The SVD UNet (with and without ControlNeXt's control) against diffusers' UNetSpatioTemporalConditionModel."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel as TorchTransformerSpatioTemporal,
)
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel as TorchUNet
from flax import nnx

from controlnext_jax.models.components import abstract_model
from controlnext_jax.models.transformer_temporal import TransformerSpatioTemporalModel
from controlnext_jax.models.unet_spatio_temporal import UNetConfig, UNetSpatioTemporalConditionModel
from controlnext_jax.testing.torch_checkpoints import model_config, model_configs
from controlnext_jax.testing.torch_controlnext import hook_control_into_unet
from tests.parity import (
    TOL,
    copy_torch_weights,
    full_size_pair,
    mapped_torch_shapes,
    nchw_to_nhwc,
    randomize_,
    rel_err,
    torch_param_shapes,
)

# every block variant: a DownBlock with a downsampler, cross-attention up blocks with and without an
# upsampler, per-block layer counts, cross dim != channels, per-block heads
COVER = UNetConfig(down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal",
                                     "CrossAttnDownBlockSpatioTemporal"),
                   up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal",
                                   "CrossAttnUpBlockSpatioTemporal"),
                   block_out_channels=(32, 64, 64), addition_time_embed_dim=8,
                   projection_class_embeddings_input_dim=24, layers_per_block=(1, 1, 2), cross_attention_dim=24,
                   num_attention_heads=(2, 1, 2))
B, F_, H, W = 2, 3, 12, 10  # W=10 is not a multiple of 4: the up blocks upsample to the skips' sizes


@pytest.fixture(scope="module")
def pair():
    """diffusers' UNet with random weights and ours holding the same weights (built abstractly, then
    filled: eager NNX initialisation of a UNet costs tens of seconds on CPU)."""
    torch_unet = randomize_(TorchUNet.from_config(COVER.to_dict()), seed=1)
    ours = abstract_model(UNetSpatioTemporalConditionModel, COVER)
    copy_torch_weights(ours, torch_unet)
    return torch_unet, ours


def inputs(cfg: UNetConfig, tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(B, F_, cfg.in_channels, H, W, generator=g)
    context = torch.randn(B, tokens, cfg.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(B, 1) + torch.rand(B, 3, generator=g)
    return sample, context, ids


@nnx.jit
def forward(model, *args):
    return model(*args)


def run_jit(model, sample, t, context, ids, control=None, scale=1.0):
    args = [jnp.asarray(nchw_to_nhwc(sample)), jnp.asarray(np.asarray(t, np.float32)),
            jnp.asarray(context.numpy()), jnp.asarray(ids.numpy())]
    if control is not None:
        args += [jnp.asarray(nchw_to_nhwc(control)), jnp.asarray(scale)]
    return forward(model, *args)


def test_transformer_spatio_temporal_matches_diffusers():
    tm = randomize_(TorchTransformerSpatioTemporal(2, 16, in_channels=32, num_layers=2, cross_attention_dim=24), 3)
    ours = abstract_model(TransformerSpatioTemporalModel, 2, 16, 32, num_layers=2, cross_attention_dim=24)
    copy_torch_weights(ours, tm)
    b, f = 2, 3
    x = torch.randn(b * f, 32, 5, 4)
    ctx = torch.randn(b, 2, 24).repeat_interleave(f, dim=0)
    ref = tm(x, encoder_hidden_states=ctx, image_only_indicator=torch.zeros(b, f)).sample
    out = nnx.jit(lambda m, a, c: m(a, c, num_frames=f))(ours, jnp.asarray(nchw_to_nhwc(x)),
                                                         jnp.asarray(ctx.numpy()))
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL


@pytest.mark.slow
def test_unet_without_control_matches_diffusers(pair):
    torch_unet, ours = pair
    sample, context, ids = inputs(COVER, tokens=2, seed=11)
    t = torch.tensor([0.3, -1.2])  # per-batch continuous timesteps, SVD's 0.25*ln(sigma)
    with torch.no_grad():
        ref = torch_unet(sample, t, context, ids).sample
    out = run_jit(ours, sample, t.numpy(), context, ids)
    assert out.shape == (B, F_, H, W, COVER.out_channels)
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL


@pytest.mark.slow
def test_unet_with_control_matches_original_injection(pair):
    torch_unet, ours = pair
    sample, context, ids = inputs(COVER, tokens=1, seed=12)
    # x after down block 0 is 6x5; an 11x9 control (2x-1) makes the pooling bins overlap unevenly
    control = torch.randn(B * F_, COVER.block_out_channels[0], 11, 9) * 0.5 + 0.3
    scales = np.array([0.0, 1.5], np.float32)  # CFG batch: the uncond half gets no control
    t = 0.25 * np.log(7.3)
    handle = hook_control_into_unet(torch_unet, control,
                                     torch.from_numpy(np.repeat(scales, F_))[:, None, None, None])
    try:
        with torch.no_grad():
            ref = torch_unet(sample, torch.tensor(t), context, ids).sample
    finally:
        handle.remove()
    with torch.no_grad():
        plain = torch_unet(sample, torch.tensor(t), context, ids).sample
    out = run_jit(ours, sample, t, context, ids, control, scales)
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL
    # the control matters where its scale is nonzero, and only there
    assert rel_err(out[1], nchw_to_nhwc(plain[1])) > 1e-2
    assert rel_err(out[0], nchw_to_nhwc(plain[0])) < TOL


def checkpoint_count(model, *args) -> int:
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda st, *a: nnx.merge(graphdef, st)(*a))(state, *args)
    # jax.checkpoint's primitive (named remat2 in current JAX) at the top level of the forward
    return sum(e.primitive.name.startswith(("remat", "checkpoint")) for e in jaxpr.jaxpr.eqns)


def test_remat_tiny_unet_matches_original_injection():
    cfg = model_config("unet")
    torch_unet = randomize_(TorchUNet.from_config(cfg.to_dict()), seed=4)
    ours = abstract_model(UNetSpatioTemporalConditionModel, cfg, remat=True)
    copy_torch_weights(ours, torch_unet)
    g = torch.Generator().manual_seed(13)
    sample, context = torch.randn(1, 2, cfg.in_channels, 4, 6, generator=g), torch.randn(1, 1, 32, generator=g)
    ids, control = torch.tensor([[6.0, 127.0, 0.02]]), torch.randn(2, 32, 3, 5, generator=g)
    handle = hook_control_into_unet(torch_unet, control, torch.tensor(1.0))
    try:
        with torch.no_grad():
            ref = torch_unet(sample, torch.tensor(-0.7), context, ids).sample
    finally:
        handle.remove()
    out = run_jit(ours, sample, -0.7, context, ids, control, np.float32(1.0))
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL
    # one checkpointed region per down, mid and up block; none without remat
    args = (jnp.asarray(nchw_to_nhwc(sample)), jnp.float32(-0.7), jnp.asarray(context.numpy()),
            jnp.asarray(ids.numpy()), jnp.asarray(nchw_to_nhwc(control)), 1.0)
    assert checkpoint_count(ours, *args) == 2 + 1 + 2
    ours.remat = False
    assert checkpoint_count(ours, *args) == 0


@pytest.fixture(scope="module")
def svd_xt():
    """The full-size UNet, ours abstract (nnx.eval_shape) and diffusers' on the meta device: no weights."""
    return full_size_pair("unet", TorchUNet.from_config)


def test_svd_xt_config_maps_every_torch_key(svd_xt):
    torch_unet, abstract = svd_xt
    ours = mapped_torch_shapes(abstract)
    theirs = torch_param_shapes(torch_unet)
    assert len(theirs) == 1428
    assert ours == theirs
    assert sum(int(np.prod(s)) for s in ours.values()) == sum(p.numel() for p in torch_unet.parameters())


def test_svd_xt_norm_eps_heads_and_mixers_match_diffusers(svd_xt):
    """Settings that random-weight parity at 1e-4 cannot see (a GroupNorm eps of 1e-5 vs 1e-6 moves
    unit-variance activations by ~5e-6), checked module by module at the same path."""
    torch_unet, ours = svd_xt
    seen = {"GroupNorm": 0, "LayerNorm": 0, "Attention": 0, "AlphaBlender": 0}
    for name, tm in torch_unet.named_modules():
        kind = type(tm).__name__
        if kind not in seen:
            continue
        node = ours
        for part in name.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        seen[kind] += 1
        if kind in ("GroupNorm", "LayerNorm"):
            assert node.epsilon == tm.eps, name
        if kind == "GroupNorm":
            assert node.num_groups == tm.num_groups, name
        if kind == "LayerNorm":
            assert (node.scale is not None) == tm.elementwise_affine, name
        if kind == "Attention":
            assert node.heads == tm.heads, name
        if kind == "AlphaBlender":
            assert node.switch_spatial_to_temporal_mix == tm.switch_spatial_to_temporal_mix, name
            assert tm.merge_strategy == "learned_with_images", name  # == sigmoid(mix) with SVD's all-video frames
    eps = {tm.eps for _, tm in torch_unet.named_modules() if type(tm).__name__ == "GroupNorm"}
    assert eps == {1e-5, 1e-6} and all(seen.values()), (eps, seen)


def test_config_round_trip_and_validation():
    d = model_configs("svd_xt")["unet"]
    cfg = UNetConfig.from_dict({**d, "_diffusers_version": "0.24.0", "upcast_attention": False})
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.block_out_channels == (320, 640, 1280, 1280)
    with pytest.raises(ValueError, match="down_block_types"):
        UNetConfig.from_dict({**d, "down_block_types": ["DownBlock2D"] * 4})
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        UNetConfig.from_dict({**d, "time_cond_proj_dim": 8})
