"""The temporal-decoder VAE against diffusers' AutoencoderKLTemporalDecoder (random weights, float32)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder as TorchVAE
from diffusers.models.resnet import AlphaBlender as TorchAlphaBlender
from flax import nnx

from controlnext_jax.models.components import abstract_model
from controlnext_jax.models.vae_temporal import AutoencoderKLTemporalDecoder, VAEConfig
from controlnext_jax.testing.torch_checkpoints import model_config
from tests.parity import (
    TOL,
    copy_torch_weights,
    full_size_pair,
    mapped_torch_shapes,
    nchw_to_nhwc,
    nhwc_to_nchw,
    randomize_,
    rel_err,
    torch_param_shapes,
)


def _pair(config: VAEConfig, seed: int = 0):
    """diffusers model with random weights and ours loaded from it. The strict copy assigns
    every parameter, so ours is built abstractly (eager random init costs tens of seconds on CPU)."""
    tm = randomize_(TorchVAE.from_config(config.to_dict()), seed=seed)
    ours = abstract_model(AutoencoderKLTemporalDecoder, config)
    copy_torch_weights(ours, tm)
    return ours, tm


# decode parity runs under jit (static num_frames); the encoder tests run eagerly
_decode_jit = nnx.jit(lambda m, z, num_frames: m.decode(z, num_frames), static_argnums=2)


@pytest.fixture(scope="module")
def tiny_pair():
    return _pair(model_config("vae"))


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def test_encode_moments_and_mode(tiny_pair):
    ours, tm = tiny_pair
    x = _images(3, 64, 48, seed=1)  # non-square
    with torch.no_grad():
        dist = tm.encode(x).latent_dist
    mean, logvar = ours.encode(jnp.asarray(nchw_to_nhwc(x)))
    assert mean.shape == (3, 8, 6, 4)
    assert rel_err(mean, nchw_to_nhwc(dist.mean)) <= TOL
    assert rel_err(logvar, nchw_to_nhwc(dist.logvar)) <= TOL
    assert rel_err(ours.encode_mode(jnp.asarray(nchw_to_nhwc(x))), nchw_to_nhwc(dist.mode())) <= TOL


def test_encode_logvar_is_clamped():
    # push the logvar channels of quant_conv far out so the clamp to [-30, 20] engages on both sides
    ours, tm = _pair(model_config("vae"), seed=2)
    with torch.no_grad():
        tm.quant_conv.bias[4:6] = 1e3
        tm.quant_conv.bias[6:8] = -1e3
    copy_torch_weights(ours, tm)
    x = _images(2, 16, 16, seed=3)
    with torch.no_grad():
        dist = tm.encode(x).latent_dist
    _, logvar = ours.encode(jnp.asarray(nchw_to_nhwc(x)))
    assert float(logvar.max()) == 20.0 and float(logvar.min()) == -30.0
    np.testing.assert_allclose(np.asarray(logvar), nchw_to_nhwc(dist.logvar), rtol=1e-4, atol=1e-4)


def test_encode_sample_is_mean_plus_std_eps_under_jit(tiny_pair):
    ours, tm = tiny_pair
    x = _images(2, 32, 32, seed=4)
    key = jax.random.key(7)
    with torch.no_grad():
        dist = tm.encode(x).latent_dist
    eps = jax.random.normal(key, (2, 4, 4, 4), jnp.float32)  # the draw encode_sample documents
    ref = dist.mean + dist.std * nhwc_to_nchw(eps)
    z = nnx.jit(lambda m, a, k: m.encode_sample(a, k))(ours, jnp.asarray(nchw_to_nhwc(x)), key)
    assert rel_err(z, nchw_to_nhwc(ref)) <= TOL
    assert rel_err(z, nchw_to_nhwc(dist.mean)) > 1e-3  # the noise term is really there


@pytest.mark.parametrize("batch,num_frames", [(2, 1), (1, 2), (2, 3)])
def test_decode(tiny_pair, batch, num_frames):
    ours, tm = tiny_pair
    g = torch.Generator().manual_seed(10 + num_frames)
    z = torch.randn(batch * num_frames, 4, 8, 6, generator=g)
    with torch.no_grad():
        ref = tm.decode(z, num_frames=num_frames).sample
    out = _decode_jit(ours, jnp.asarray(nchw_to_nhwc(z)), num_frames)
    assert out.shape == (batch * num_frames, 64, 48, 3)
    assert rel_err(out, nchw_to_nhwc(ref)) <= TOL


@pytest.mark.parametrize("layers_per_block", [1, 3])
def test_decode_mid_block_pairing(layers_per_block):
    # diffusers runs the mid-block attention only with resnets[1]; 1 and 3 layers exercise both edges
    ours, tm = _pair(dataclasses.replace(model_config("vae"), layers_per_block=layers_per_block), seed=5)
    z = torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        ref = tm.decode(z, num_frames=2).sample
    assert rel_err(_decode_jit(ours, jnp.asarray(nchw_to_nhwc(z)), 2), nchw_to_nhwc(ref)) <= TOL


def test_single_level():
    # one level: no downsampler or upsampler; layers_per_block 1: the decoder mid attention is unused
    cfg = VAEConfig(down_block_types=("DownEncoderBlock2D",), block_out_channels=(32,), layers_per_block=1)
    ours, tm = _pair(cfg, seed=8)
    x = _images(2, 8, 6, seed=9)
    with torch.no_grad():
        dist = tm.encode(x).latent_dist
        ref = tm.decode(dist.mean, num_frames=2).sample
    mean, logvar = ours.encode(jnp.asarray(nchw_to_nhwc(x)))
    assert rel_err(mean, nchw_to_nhwc(dist.mean)) <= TOL
    assert rel_err(logvar, nchw_to_nhwc(dist.logvar)) <= TOL
    assert rel_err(ours.decode(mean, 2), nchw_to_nhwc(ref)) <= TOL


def test_config_round_trip_and_validation():
    cfg = model_config("vae")
    assert VAEConfig.from_dict({**cfg.to_dict(), "_class_name": "AutoencoderKLTemporalDecoder"}) == cfg
    with pytest.raises(ValueError, match="down_block_types"):
        VAEConfig.from_dict({**cfg.to_dict(), "down_block_types": ["AttnDownEncoderBlock2D"] * 2})
    with pytest.raises(ValueError, match="block_out_channels"):
        VAEConfig.from_dict({**cfg.to_dict(), "block_out_channels": [32, 64, 64]})


def test_full_size_config_maps_every_key():
    tm, abstract = full_size_pair("vae", TorchVAE.from_config)
    ref = torch_param_shapes(tm)
    assert len(ref) == 374
    assert mapped_torch_shapes(abstract) == ref
    _assert_same_norms_and_blends(abstract, tm)


def _assert_same_norms_and_blends(ours, tm: torch.nn.Module):
    """Every GroupNorm has torch's groups and eps, every AlphaBlender its strategy and switch.
    (An eps of 1e-5 instead of 1e-6 moves outputs by far less than TOL, so the parity tests miss it.)"""
    seen = 0
    for name, mod in tm.named_modules():
        if not isinstance(mod, (torch.nn.GroupNorm, TorchAlphaBlender)):
            continue
        node = ours
        for part in name.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        if isinstance(mod, torch.nn.GroupNorm):
            assert (node.num_groups, node.epsilon) == (mod.num_groups, mod.eps), name
        else:
            assert mod.merge_strategy == "learned", name  # sigmoid(mix_factor), indicator unused
            assert node.switch_spatial_to_temporal_mix == mod.switch_spatial_to_temporal_mix, name
        seen += 1
    assert seen > 50  # 94 in the full-size model
