"""Shared layers against their diffusers counterparts (random weights, float32)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.attention import FeedForward as TorchFeedForward
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.embeddings import TimestepEmbedding as TorchTimestepEmbedding
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D as TorchResnetBlock2D
from diffusers.models.resnet import SpatioTemporalResBlock as TorchSTResBlock
from flax import nnx

from controlnext_jax.models.attention import Attention, FeedForward, set_attention_implementation
from controlnext_jax.models.clip_vision import CLIPAttention, CLIPVisionModelWithProjection
from controlnext_jax.models.components import abstract_model
from controlnext_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from controlnext_jax.models.resnet import ResnetBlock2D, SpatioTemporalResBlock
from controlnext_jax.testing.torch_checkpoints import model_config
from tests.parity import TOL, copy_torch_weights, nchw_to_nhwc, nhwc_to_nchw, randomize_, rel_err

rngs = lambda: nnx.Rngs(0)  # noqa: E731


@pytest.mark.parametrize("flip,shift", [(True, 0.0), (False, 1.0)])
def test_timestep_embedding(flip, shift):
    t = torch.rand(5) * 10 - 3  # fractional and negative, as SVD's 0.25*ln(sigma)
    ref = get_timestep_embedding(t, 64, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    out = timestep_embedding(jnp.asarray(t.numpy()), 64, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    assert rel_err(out, ref.numpy()) < TOL


def test_timestep_embedding_mlp():
    tm = randomize_(TorchTimestepEmbedding(32, 48), seed=1)
    ours = TimestepEmbedding(32, 48, rngs=rngs())
    copy_torch_weights(ours, tm)
    x = torch.randn(3, 32)
    assert rel_err(ours(jnp.asarray(x.numpy())), tm(x).detach().numpy()) < TOL


@pytest.mark.parametrize("cin,cout,groups,eps", [(32, 32, 8, 1e-6), (32, 64, 8, 1e-5)])
def test_resnet_block_2d(cin, cout, groups, eps):
    tm = randomize_(TorchResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=24, groups=groups, eps=eps), 2)
    ours = ResnetBlock2D(cin, cout, temb_channels=24, groups=groups, eps=eps, rngs=rngs())
    copy_torch_weights(ours, tm)
    x, temb = torch.randn(2, cin, 9, 7), torch.randn(2, 24)
    ref = tm(x, temb)
    out = ours(jnp.asarray(nchw_to_nhwc(x)), jnp.asarray(temb.numpy()))
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL


def test_spatio_temporal_res_block():
    tm = randomize_(TorchSTResBlock(32, 64, temb_channels=16, eps=1e-5, temporal_eps=1e-6,
                                    merge_strategy="learned_with_images", switch_spatial_to_temporal_mix=True), 3)
    ours = SpatioTemporalResBlock(32, 64, temb_channels=16, eps=1e-5, temporal_eps=1e-6,
                                  switch_spatial_to_temporal_mix=True, rngs=rngs())
    copy_torch_weights(ours, tm)
    b, f = 2, 3
    x, temb = torch.randn(b * f, 32, 6, 5), torch.randn(b * f, 16)
    ref = tm(x, temb, image_only_indicator=torch.zeros(b, f))
    out = ours(jnp.asarray(nchw_to_nhwc(x)), jnp.asarray(temb.numpy()), num_frames=f)
    assert rel_err(out, nchw_to_nhwc(ref)) < TOL


def test_self_attention_with_group_norm_on_images():
    # the VAE mid-block attention: GroupNorm, biased projections, residual connection
    tm = randomize_(TorchAttention(64, heads=2, dim_head=32, eps=1e-6, norm_num_groups=32, bias=True,
                                   residual_connection=True, upcast_softmax=True), 4)
    ours = Attention(64, heads=2, dim_head=32, eps=1e-6, norm_num_groups=32, bias=True,
                     residual_connection=True, rngs=rngs())
    copy_torch_weights(ours, tm)
    x = torch.randn(2, 64, 5, 6)
    ref = tm(x)
    assert rel_err(ours(jnp.asarray(nchw_to_nhwc(x))), nchw_to_nhwc(ref)) < TOL


def test_cross_attention():
    tm = randomize_(TorchAttention(40, cross_attention_dim=24, heads=4, dim_head=10), 5)
    ours = Attention(40, cross_attention_dim=24, heads=4, dim_head=10, rngs=rngs())
    copy_torch_weights(ours, tm)
    x, ctx = torch.randn(3, 11, 40), torch.randn(3, 2, 24)
    ref = tm(x, encoder_hidden_states=ctx)
    assert rel_err(ours(jnp.asarray(x.numpy()), jnp.asarray(ctx.numpy())), ref.detach().numpy()) < TOL


def test_feed_forward_geglu_uses_exact_gelu():
    tm = randomize_(TorchFeedForward(32, activation_fn="geglu"), 6)
    ours = FeedForward(32, rngs=rngs())
    copy_torch_weights(ours, tm)
    x = torch.randn(2, 7, 32) * 3  # large inputs: the tanh GELU approximation would miss the tolerance
    assert rel_err(ours(jnp.asarray(x.numpy())), tm(x).detach().numpy()) < TOL


def test_nhwc_helpers_round_trip():
    a = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(nchw_to_nhwc(nhwc_to_nchw(a)), a)


def test_set_attention_implementation_reaches_every_attention_layer():
    # the cuDNN switch for GPUs: the shared Attention (UNet, VAE) and CLIP's own attention
    clip = abstract_model(CLIPVisionModelWithProjection, model_config("image_encoder"))
    attention = Attention(32, heads=2, dim_head=16, rngs=rngs())
    for model, kind in ((clip, CLIPAttention), (attention, Attention)):
        set_attention_implementation(model, "xla")
        layers = [m for _, m in model.iter_modules() if isinstance(m, kind)]
        assert layers and all(m.implementation == "xla" for m in layers)
    with pytest.raises(ValueError, match="flash"):
        set_attention_implementation(clip, "flash")
