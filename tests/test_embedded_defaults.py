"""How controlnext-animate finds and runs the embedded model, on a tiny stand-in.

The shipped model has its own test (tests/test_embedded_model.py); here a tiny random
checkpoint, exported the way the embedded one is (bfloat16, safetensors, inference_defaults),
takes its place, so every rule is checked quickly: ckpt=null picks the embedded checkpoint and
says so, its settings apply where the command line gives none, the command line wins over them,
example=true brings the bundled image and pose video, and the safetensors storage loads the
same parameters as the orbax one.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from controlnext_jax import embedded
from controlnext_jax.checkpoint.store import SAFETENSORS_FILE, load_component, read_pipeline
from controlnext_jax.commands import animate
from controlnext_jax.pose.media import probe_video, read_video, write_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release
from controlnext_jax.training.export import export_inference
from controlnext_jax.training.models import load_training_models

DEFAULTS = {"height": 80, "width": 64, "batch_frames": 3, "overlap": 1, "decode_chunk_size": 4}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> dict:
    """A tiny checkpoint exported like the embedded model, and an example beside it."""
    base = tmp_path_factory.mktemp("embedded")
    converted = build_random_release(base / "release", model_configs("tiny"), seed=5)[1]
    models = load_training_models(converted, "float32")
    ckpt = export_inference(base / "checkpoint", models, dtype="bfloat16", storage="safetensors",
                            inference_defaults=DEFAULTS, log=lambda *_: None)
    example = base / "example"
    example.mkdir()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (80, 60, 3), np.uint8)
    import imageio.v3 as iio

    iio.imwrite(example / "reference.png", image)
    poses = [np.zeros((80, 60, 3), np.uint8) for _ in range(5)]
    for i, pose in enumerate(poses):
        pose[20:60, 10 + 5 * i:14 + 5 * i] = (255, 0, 85)
    write_video(example / "poses.mp4", poses, fps=8)
    return {"ckpt": Path(ckpt), "converted": Path(converted), "example": example}


@pytest.fixture
def as_embedded(stand_in, monkeypatch):
    monkeypatch.setattr(embedded, "CHECKPOINT_DIR", stand_in["ckpt"])
    monkeypatch.setattr(embedded, "EXAMPLE", {"image": stand_in["example"] / "reference.png",
                                              "video": stand_in["example"] / "driving.mp4",
                                              "pose_video": stand_in["example"] / "poses.mp4"})
    return stand_in


def test_safetensors_storage_holds_the_same_parameters_as_orbax(stand_in):
    for name in ("unet", "vae", "image_encoder", "controlnext"):
        assert (stand_in["ckpt"] / name / SAFETENSORS_FILE).is_file()
        assert not (stand_in["ckpt"] / name / "parts.json").exists()
        plain = load_component(stand_in["ckpt"], name, param_dtype="float32")
        orbax = load_component(stand_in["converted"], name, param_dtype="float32")
        # bfloat16 storage: each parameter is the float32 one rounded to 8 mantissa bits
        for a, b in zip(jax.tree.leaves(nnx.state(plain, nnx.Param)), jax.tree.leaves(nnx.state(orbax, nnx.Param))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(jax.numpy.asarray(b).astype("bfloat16")
                                                                     .astype("float32")))
    assert read_pipeline(stand_in["ckpt"])["inference_defaults"] == DEFAULTS


def test_a_sharded_restore_reads_the_safetensors_storage(stand_in):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    restored = load_training_models(stand_in["ckpt"], "float32", mesh=mesh, components=("controlnext",))
    direct = load_component(stand_in["ckpt"], "controlnext", param_dtype="float32")
    for a, b in zip(jax.tree.leaves(nnx.state(restored["controlnext"], nnx.Param)),
                    jax.tree.leaves(nnx.state(direct, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_ckpt_animates_the_bundled_example_with_the_embedded_model(as_embedded, tmp_path, capsys):
    out = tmp_path / "example.mp4"
    animate.main(["example=true", f"out={out}", "num_inference_steps=2", "seed=3", "progress=false",
                  f"compilation_cache={tmp_path / 'cache'}"])
    printed = capsys.readouterr().out
    assert "ckpt=null: the embedded model" in printed and "height=80, width=64" in printed
    video = read_video(out)
    assert video.shape == (5, 80, 64, 3) and probe_video(out).fps == 7
    sidecar = json.loads(out.with_name("example.json").read_text())
    assert sidecar["parameters"]["ckpt"] == str(as_embedded["ckpt"])
    assert {k: sidecar["parameters"][k] for k in DEFAULTS} == DEFAULTS
    assert sidecar["parameters"]["pose_video"] == str(as_embedded["example"] / "poses.mp4")


def test_the_command_line_wins_over_the_checkpoints_settings(as_embedded, tmp_path):
    params = animate.resolve_parameters(_compose(["example=true", "height=72", "overlap=0"]),
                                        ["example=true", "height=72", "overlap=0"], log=lambda *_: None)
    assert params["height"] == 72 and params["overlap"] == 0
    assert params["width"] == 64 and params["batch_frames"] == 3  # from the checkpoint
    other = animate.resolve_parameters(_compose([f"ckpt={as_embedded['converted']}", "image=a.png", "video=b.mp4"]),
                                       [f"ckpt={as_embedded['converted']}"], log=lambda *_: None)
    assert other["height"] == 1024 and other["width"] == 576  # no inference_defaults: the endpoint's


def _compose(overrides: list[str]):
    from controlnext_jax.cli import compose_config

    return compose_config("animate", overrides)


@pytest.mark.parametrize("args, message", [
    (["example=true", "image=x.png"], "example=true: brings its own image"),
    (["example=maybe"], "example='maybe'"),
])
def test_example_mistakes_are_one_line_and_status_2(as_embedded, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        animate.main([*args, f"out={tmp_path / 'x.mp4'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_missing_embedded_model_is_one_line_and_status_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(embedded, "CHECKPOINT_DIR", tmp_path / "absent")
    with pytest.raises(SystemExit) as exit_info:
        animate.main(["image=a.png", "video=b.mp4", f"out={tmp_path / 'x.mp4'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the embedded model is missing" in err, err
