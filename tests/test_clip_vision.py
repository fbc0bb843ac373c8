"""CLIP vision tower and SVD's CLIP preprocessing against transformers / diffusers (float32)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from flax import nnx
from transformers import CLIPImageProcessor
from transformers import CLIPVisionConfig as TorchCLIPVisionConfig
from transformers import CLIPVisionModelWithProjection as TorchCLIPVision

from controlnext_jax.models.clip_preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess
from controlnext_jax.models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from controlnext_jax.models.components import abstract_model
from controlnext_jax.testing.torch_checkpoints import model_config, model_configs
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


def _torch_model(cfg: CLIPVisionConfig) -> TorchCLIPVision:
    return TorchCLIPVision(TorchCLIPVisionConfig(**cfg.to_dict()))


@pytest.mark.parametrize("act,other", [("gelu", "quick_gelu"), ("quick_gelu", "gelu")])
def test_image_embeds_match_transformers(act, other):
    cfg = CLIPVisionConfig.from_dict({**model_config("image_encoder").to_dict(), "hidden_act": act})
    tm = randomize_(_torch_model(cfg), seed=7)
    ours = abstract_model(CLIPVisionModelWithProjection, cfg)
    copy_torch_weights(ours, tm)
    x = torch.randn(3, 3, cfg.image_size, cfg.image_size) * 2
    with torch.no_grad():
        ref = tm(pixel_values=x).image_embeds.numpy()
    out = nnx.jit(lambda m, p: m(p))(ours, jnp.asarray(nchw_to_nhwc(x)))
    assert out.shape == (3, cfg.projection_dim)
    assert rel_err(out, ref) <= TOL
    # the same weights with the other activation land far away: the tolerance tells them apart
    tm_other = _torch_model(dataclasses.replace(cfg, hidden_act=other)).eval()
    tm_other.load_state_dict(tm.state_dict())
    with torch.no_grad():
        assert rel_err(out, tm_other(pixel_values=x).image_embeds.numpy()) > 10 * TOL


def test_config_from_dict_forms():
    svd = model_configs("svd_xt")["image_encoder"]
    cfg = CLIPVisionConfig.from_dict(svd)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.projection_dim, cfg.hidden_act) == \
        (1280, 32, 14, 1024, "gelu")
    full = {"model_type": "clip", "projection_dim": 1024, "text_config": {"hidden_size": 1024},
            "vision_config": svd}
    assert CLIPVisionConfig.from_dict(full) == cfg
    assert CLIPVisionConfig.from_dict(cfg.to_dict()) == cfg
    # omitted fields take transformers' defaults
    assert CLIPVisionConfig.from_dict({}).to_dict() == {
        k: v for k, v in TorchCLIPVisionConfig().to_dict().items() if k in CLIPVisionConfig().to_dict()}
    with pytest.raises(ValueError, match="hidden_act"):
        CLIPVisionConfig.from_dict({**svd, "hidden_act": "gelu_new"})
    with pytest.raises(ValueError, match="model_type"):
        CLIPVisionConfig.from_dict({**svd, "model_type": "siglip_vision_model"})


def test_full_size_svd_image_encoder_maps():
    tm, abstract = full_size_pair("image_encoder", lambda d: TorchCLIPVision(TorchCLIPVisionConfig(**d)))
    torch_shapes = torch_param_shapes(tm)
    assert mapped_torch_shapes(abstract) == torch_shapes
    assert len(torch_shapes) == 3 + 4 + 32 * 16 + 1  # embeddings, pre/post norms, layers, projection
    assert sum(np.prod(s) for s in torch_shapes.values()) > 6.3e8  # ViT-H/14 tower: ~632M parameters


def _diffusers_clip_input(images_nhwc: np.ndarray) -> np.ndarray:
    """What SVD's `_encode_image` feeds the image encoder, from images in [-1, 1]."""
    x = _resize_with_antialiasing(nhwc_to_nchw(images_nhwc), (224, 224))
    x = (x + 1.0) / 2.0
    proc = CLIPImageProcessor()
    assert tuple(proc.image_mean) == CLIP_MEAN and tuple(proc.image_std) == CLIP_STD
    pv = proc(images=x, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
              return_tensors="pt").pixel_values
    return nchw_to_nhwc(pv)


@pytest.mark.parametrize("hw", [(576, 1024), (300, 200), (100, 150), (224, 224), (1024, 576)])
def test_clip_preprocess_matches_diffusers(hw):
    rng = np.random.default_rng(sum(hw))
    # smooth structure plus pixel noise, in [-1, 1]
    yy, xx = np.meshgrid(np.linspace(0, 6, hw[0]), np.linspace(0, 9, hw[1]), indexing="ij")
    base = np.sin(yy)[..., None] * np.cos(xx[..., None] + np.arange(3))
    images = np.clip(base[None] * 0.7 + rng.normal(size=(2, *hw, 3)) * 0.3, -1, 1).astype(np.float32)
    ref = _diffusers_clip_input(images)
    out = jax.jit(clip_preprocess)(jnp.asarray(images))
    assert out.shape == (2, 224, 224, 3)
    assert rel_err(out, ref) <= TOL


def test_clip_preprocess_stretches_whole_image():
    # a wide image whose left and right quarters are bright and middle dark: stretched, both
    # bright bands survive at the output's edges; a centre crop would keep only the dark middle
    h, w = 100, 400
    img = -np.ones((1, h, w, 3), np.float32)
    img[:, :, : w // 4] = 1.0
    img[:, :, -w // 4:] = 1.0
    out = np.asarray(clip_preprocess(jnp.asarray(img)))
    bright = (1.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    dark = (0.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    np.testing.assert_allclose(out[0, :, :40], np.broadcast_to(bright, (224, 40, 3)), atol=1e-3)
    np.testing.assert_allclose(out[0, :, -40:], np.broadcast_to(bright, (224, 40, 3)), atol=1e-3)
    np.testing.assert_allclose(out[0, :, 80:144], np.broadcast_to(dark, (224, 64, 3)), atol=1e-3)
    # and the crop-then-resize alternative is far from the reference pipeline's output
    crop = img[:, :, (w - h) // 2:(w + h) // 2]
    assert rel_err(clip_preprocess(jnp.asarray(crop)), _diffusers_clip_input(img)) > 0.5
