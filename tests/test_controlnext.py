"""ControlNeXt conditioning module against our PyTorch reference (tests/torch_controlnext.py)."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import yaml
from flax import nnx

from controlnext_jax.models.components import abstract_model
from controlnext_jax.models.controlnext import ControlNeXtConfig, ControlNeXtSDVModel
from controlnext_jax.testing.torch_controlnext import TorchControlNeXt
from tests.parity import (
    TOL,
    copy_torch_weights,
    mapped_torch_shapes,
    nchw_to_nhwc,
    randomize_,
    rel_err,
    torch_param_shapes,
)

SVD_XT = Path(__file__).resolve().parents[1] / "configs" / "model" / "svd_xt.yaml"
RELEASE = Path("/work/ref/ControlNeXt/ControlNeXt-SVD-v2/models/controlnext_vid_svd.py")


def _release_config() -> dict:
    return yaml.safe_load(SVD_XT.read_text())["controlnext"]


_run = nnx.jit(lambda m, pose, t: m(pose, t))


def _from_torch(cfg: ControlNeXtConfig, tm: torch.nn.Module, **kw) -> ControlNeXtSDVModel:
    # built abstractly (eager random init is slow on CPU); the strict copy then fills every parameter
    ours = abstract_model(ControlNeXtSDVModel, cfg, **kw)
    copy_torch_weights(ours, tm)
    return ours


def _pair(cfg: ControlNeXtConfig, seed: int):
    tm = randomize_(TorchControlNeXt(**cfg.to_dict()), seed=seed)
    return _from_torch(cfg, tm), tm


@pytest.mark.parametrize("stem_padding", [0, 1])
def test_matches_torch_reference_under_jit(stem_padding):
    # full-width release config on a small non-square clip; timestep per video, fractional and negative
    cfg = ControlNeXtConfig.from_dict({**_release_config(), "stem_padding": stem_padding})
    ours, tm = _pair(cfg, seed=10 + stem_padding)
    g = torch.Generator().manual_seed(stem_padding)
    pose = torch.rand(2, 3, 3, 64, 40, generator=g)
    t = torch.tensor([1.63, -1.2])
    with torch.no_grad():
        ref = tm(pose, t)

    out = _run(ours, jnp.asarray(nchw_to_nhwc(pose)), jnp.asarray(t.numpy()))
    assert out.shape == (6, *ref.shape[2:], 320)
    err = rel_err(out, nchw_to_nhwc(ref))
    assert err <= TOL, err


def test_scalar_timestep_and_frame_order():
    # a scalar timestep is shared by the batch; frames stay batch-major (b*f)
    cfg = ControlNeXtConfig.tiny()
    ours, tm = _pair(cfg, seed=3)
    pose = torch.rand(2, 4, 3, 36, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tm(pose, torch.tensor(0.7))
    out = _run(ours, jnp.asarray(nchw_to_nhwc(pose)), 0.7)
    assert rel_err(out, nchw_to_nhwc(ref)) <= TOL
    # per-frame outputs of video 1 do not depend on video 0's pose
    pose2 = pose.clone()
    pose2[0] = torch.rand(4, 3, 36, 28, generator=torch.Generator().manual_seed(6))
    out2 = _run(ours, jnp.asarray(nchw_to_nhwc(pose2)), 0.7)
    np.testing.assert_allclose(out2[4:], out[4:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out2[:4], out[:4])


@pytest.mark.parametrize("stem_padding,hw", [(0, (127, 71)), (1, (128, 72))])
def test_output_size_at_1024x576(stem_padding, hw):
    cfg = ControlNeXtConfig.from_dict({**_release_config(), "stem_padding": stem_padding})
    model = abstract_model(ControlNeXtSDVModel, cfg)
    pose = jax.ShapeDtypeStruct((1, 2, 1024, 576, 3), jnp.float32)
    out = nnx.eval_shape(lambda m, p: m(p, jnp.float32(1.0)), model, pose)
    assert out.shape == (2, *hw, 320)

    with torch.device("meta"):
        ref = TorchControlNeXt(**cfg.to_dict())(torch.empty(1, 2, 3, 1024, 576), torch.tensor(1.0))
    assert tuple(ref.shape) == (2, 320, *hw)


def test_full_size_parameter_table_matches_torch():
    cfg = ControlNeXtConfig.from_dict(_release_config())
    model = abstract_model(ControlNeXtSDVModel, cfg)
    with torch.device("meta"):
        tm = TorchControlNeXt(**cfg.to_dict())
    ref = torch_param_shapes(tm)
    assert mapped_torch_shapes(model) == ref
    assert "down_res.1.conv_shortcut.weight" in ref and "down_sample.0.conv.weight" in ref
    assert "mid_convs.0.4.bias" in ref and "embedding.6.weight" in ref


@pytest.mark.skipif(not RELEASE.exists(), reason="the original release is not checked out here")
def test_reference_module_has_the_release_keys_and_outputs():
    # our torch reference equals the release's ControlNeXtSDVModel (inference copy) key for key and numerically
    spec = importlib.util.spec_from_file_location("_release_controlnext", RELEASE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    release = mod.ControlNeXtSDVModel().eval()
    ours = randomize_(TorchControlNeXt(), seed=7)
    release.load_state_dict(ours.state_dict(), strict=True)
    pose = torch.rand(1, 2, 3, 48, 32)
    with torch.no_grad():
        ref = release(pose, torch.tensor(0.3))
        assert ref["scale"] == 1.0
        torch.testing.assert_close(ours(pose, torch.tensor(0.3)), ref["output"], rtol=0, atol=0)


def test_config_round_trip_and_validation():
    d = {"_class_name": "ControlNeXtSDVModel", "_diffusers_version": "0.25.1", "time_embed_dim": 256,
         "in_channels": [128, 128], "out_channels": [128, 256], "groups": [4, 8]}
    cfg = ControlNeXtConfig.from_dict(d)
    assert cfg == ControlNeXtConfig() and cfg.stem_padding == 0 and cfg.control_channels == 320
    assert ControlNeXtConfig.from_dict(cfg.to_dict()) == cfg
    assert ControlNeXtConfig.from_dict(_release_config()) == cfg
    with pytest.raises(ValueError, match="stem_padding"):
        ControlNeXtConfig(stem_padding=2)
    with pytest.raises(ValueError, match="in_channels"):
        ControlNeXtConfig(in_channels=(128, 64))


def test_bfloat16_compute_stays_close():
    cfg = ControlNeXtConfig.tiny()
    ours, tm = _pair(cfg, seed=4)
    bf = _from_torch(cfg, tm, dtype=jnp.bfloat16)
    pose = jnp.asarray(np.random.default_rng(0).random((1, 2, 32, 24, 3), np.float32))
    out = _run(bf, pose, 0.5)
    assert out.dtype == jnp.bfloat16
    assert rel_err(out.astype(jnp.float32), _run(ours, pose, 0.5)) < 3e-2

