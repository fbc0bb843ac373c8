"""The one from_dict policy of the config dataclasses (controlnext_jax/models/config_dict.py):
real upstream config.json files accepted, unknown keys and wrong-typed values refused with
an error naming the source, the component and the key."""

import json

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from transformers import CLIPConfig, PretrainedConfig
from transformers import CLIPVisionConfig as TorchCLIPVisionConfig
from transformers import CLIPVisionModelWithProjection as TorchCLIPVision

from controlnext_jax.errors import UserError
from controlnext_jax.models.clip_vision import CLIPVisionConfig
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.models.config_dict import IGNORED_KEYS
from controlnext_jax.sampling.scheduler import SchedulerConfig
from controlnext_jax.testing.torch_checkpoints import model_config, model_configs

TINY = model_configs("tiny")
# (component name, parse function, a valid dict)
PARSERS = [(name, COMPONENTS[name].config_from_dict, TINY[name]) for name in COMPONENTS]
PARSERS.append(("scheduler", SchedulerConfig.from_dict, TINY["scheduler"]))


def _saved_config(tmp_path, save) -> dict:
    save(tmp_path)
    return json.loads(next(tmp_path.glob("*.json")).read_text())


def test_config_json_written_by_diffusers_and_transformers_is_accepted(tmp_path):
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(TINY["unet"])
        vae = AutoencoderKLTemporalDecoder.from_config(TINY["vae"])
    clip_fields = {k: v for k, v in TINY["image_encoder"].items() if k not in ("architectures", "model_type")}
    clip = TorchCLIPVision(TorchCLIPVisionConfig(**clip_fields))
    scheduler = EulerDiscreteScheduler.from_config(TINY["scheduler"])
    for name, save in [("unet", unet.save_config), ("vae", vae.save_config),
                       ("image_encoder", clip.config.save_pretrained)]:
        written = _saved_config(tmp_path / name, save)
        assert COMPONENTS[name].config_from_dict(written) == model_config(name), name
    written = _saved_config(tmp_path / "scheduler", scheduler.save_config)
    assert any(k.startswith("beta") for k in written)  # keys we ignore on purpose are really there
    assert SchedulerConfig.from_dict(written) == SchedulerConfig()


def test_published_svd_config_files_are_accepted():
    # keys of stabilityai/stable-video-diffusion-img2vid-xt's image_encoder/config.json and
    # scheduler/scheduler_config.json that current save_pretrained no longer writes
    svd = model_configs("svd_xt")
    image_encoder = {**svd["image_encoder"], "_name_or_path": "x", "attention_dropout": 0.0, "dropout": 0.0,
                     "initializer_factor": 1.0, "initializer_range": 0.02, "torch_dtype": "float16",
                     "transformers_version": "4.34.0.dev0"}
    assert CLIPVisionConfig.from_dict(image_encoder) == model_config("image_encoder", "svd_xt")
    scheduler = {**svd["scheduler"], "_diffusers_version": "0.24.0.dev0", "clip_sample": False,
                 "set_alpha_to_one": False, "skip_prk_steps": True, "trained_betas": None}
    assert SchedulerConfig.from_dict(scheduler) == SchedulerConfig()


def test_every_transformers_config_attribute_is_accepted():
    # what PretrainedConfig writes for any model, and a full CLIPConfig (text tower ignored, as
    # CLIPVisionModelWithProjection does); transformers 4.x also wrote generation settings into
    # every nested vision_config
    vision = {**PretrainedConfig().to_dict(),
              **TorchCLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                      num_hidden_layers=2, projection_dim=8).to_dict(),
              "num_beams": 1, "top_k": 50, "bad_words_ids": None, "use_bfloat16": False}
    full = {**CLIPConfig().to_dict(), "vision_config": vision}
    cfg = CLIPVisionConfig.from_dict(full)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.projection_dim) == (32, 2, 8)
    assert CLIPVisionConfig.from_dict(vision) == cfg


@pytest.mark.parametrize("name,parse,valid", PARSERS, ids=[p[0] for p in PARSERS])
def test_unknown_key_is_refused_with_the_allowed_keys(name, parse, valid):
    with pytest.raises(UserError) as info:
        parse({**valid, "num_frame": 3}, source="some/config.json")
    message = str(info.value)
    assert message.startswith("some/config.json: ") and "Config: unknown key(s) ['num_frame']" in message
    assert "allowed: [" in message and "\n" not in message
    # keys starting with "_" are the libraries' file metadata
    parse({**valid, "_class_name": "X", "_diffusers_version": "0.0", "_name_or_path": "y"})


@pytest.mark.parametrize("name,key,value,allowed", [
    ("unet", "block_out_channels", "32,64", "a list of integers"),
    ("unet", "num_attention_heads", [2, 4.5], "an integer or a list of integers"),
    ("unet", "sample_size", [8, 8, 8], "an integer or a list of 2 integers or null"),
    ("vae", "scaling_factor", "0.18215", "a number"),
    ("vae", "force_upcast", 1, "true or false"),
    ("image_encoder", "hidden_size", "32", "an integer"),
    ("image_encoder", "hidden_act", None, "a string"),
    ("controlnext", "groups", [4, "8"], "a list of integers"),
    ("controlnext", "stem_padding", True, "an integer"),
    ("scheduler", "sigma_max", "700", "a positive number"),
    ("scheduler", "use_karras_sigmas", "true", "true or false"),
])
def test_wrong_type_names_source_and_key(name, key, value, allowed):
    parse, valid = next((p, v) for n, p, v in PARSERS if n == name)
    with pytest.raises(UserError) as info:
        parse({**valid, key: value}, source=f"/ckpt/{name}/config.json")
    assert str(info.value) == (f"/ckpt/{name}/config.json: {type(parse(valid)).__name__}.{key}={value!r}: "
                               f"must be {allowed}")


def test_unsupported_value_names_the_source():
    with pytest.raises(UserError, match=r"^/ckpt/vae/config.json: VAEConfig.down_block_types: unsupported"):
        COMPONENTS["vae"].config_from_dict({**TINY["vae"], "down_block_types": ["AttnDownEncoderBlock2D"] * 4},
                                           source="/ckpt/vae/config.json")
    with pytest.raises(UserError, match=r"^x.json: UNetConfig: expected a mapping of config keys, got list"):
        COMPONENTS["unet"].config_from_dict([1, 2], source="x.json")


def test_ignored_keys_are_not_fields():
    # a key both ignored and a field would be silently dropped by one reading and used by the other
    for name in (*COMPONENTS, "scheduler"):
        cls = type(model_config(name)) if name != "scheduler" else SchedulerConfig
        assert not set(IGNORED_KEYS[cls.__name__]) & set(cls.__dataclass_fields__), name
