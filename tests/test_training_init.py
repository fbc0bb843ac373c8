"""zero_residual initialisation (controlnext_jax/training/init.py) on the tiny networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.training.init import zero_residual
from controlnext_jax.training.models import init_model


def _params(model) -> dict:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_the_vae_starts_with_identity_blocks_and_a_zero_output():
    vae = zero_residual("vae", init_model("vae", model_configs("tiny")["vae"], "float32", seed=3))
    params = _params(vae)
    conv2 = [k for k in params if ".conv2." in k]
    assert conv2 and all(not params[k].any() for k in conv2)
    assert not params["decoder.conv_out.kernel"].any() and not params["decoder.conv_out.bias"].any()
    x = jax.random.normal(jax.random.key(0), (1, 3, 2, 2, 3))  # (batch, frames, h, w, rgb)
    np.testing.assert_array_equal(np.asarray(vae.decoder.time_conv_out(x)), np.asarray(x))  # centre-frame identity
    frames = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3), minval=-1, maxval=1)
    mean, _ = vae.encode(frames)
    assert float(jnp.std(mean)) > 0  # the encoder still encodes: its output layer keeps its initialiser
    assert not np.asarray(vae.decode(mean, 3)).any()


def test_the_unet_predicts_zero_and_other_layers_keep_their_initialisers():
    config = model_configs("tiny")["unet"]
    default = _params(init_model("unet", config, "float32", seed=3))
    zeroed = _params(zero_residual("unet", init_model("unet", config, "float32", seed=3)))
    for key, value in zeroed.items():
        if key.startswith("conv_out.") or ".conv2." in key or ".proj_out." in key:
            assert not value.any(), key
        else:
            np.testing.assert_array_equal(value, default[key])


def test_the_controlnext_module_is_left_alone():
    config = model_configs("tiny")["controlnext"]
    before = _params(init_model("controlnext", config, "float32", seed=3))
    after = _params(zero_residual("controlnext", init_model("controlnext", config, "float32", seed=3)))
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_an_unknown_init_is_one_line_and_status_2(tmp_path, capsys):
    from controlnext_jax.commands.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["ckpt=null", "from_scratch=[unet,controlnext,vae,image_encoder]", "model=tiny", "data=pairs",
              f"data.root={tmp_path}", f"out={tmp_path / 'run'}", "init=orthogonal"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "init='orthogonal'" in err, err
