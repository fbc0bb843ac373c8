"""controlnext-convert / controlnext-export on tiny random-weight PyTorch checkpoints.

The checkpoints are written with the real diffusers/transformers `save_pretrained` (and
`torch.save` for the ControlNeXt files), converted through the real command line, loaded
through `load_component`, and compared with the PyTorch modules they came from.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_safetensors

from controlnext_jax.checkpoint import store
from controlnext_jax.checkpoint.convert import convert_checkpoint
from controlnext_jax.checkpoint.store import load_component
from controlnext_jax.checkpoint.torch_files import CheckpointError
from controlnext_jax.errors import UserError
from controlnext_jax.testing.parity_cases import CASES, rel_err
from controlnext_jax.testing.torch_checkpoints import (
    model_configs,
    torch_models,
    write_controlnext_file,
    write_svd_folder,
    write_unet_override,
)
from tests.parity import TOL

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / args[0]
    return subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_ckpt")
    configs = model_configs("tiny")
    models = torch_models(configs, seed=0)
    write_svd_folder(root / "svd", models, configs)
    write_controlnext_file(root / "controlnet.bin", models["controlnext"])
    _, override = write_unet_override(root / "unet.bin", models["unet"])
    # the original applies unet.bin with load_state_dict(strict=False): do the same to the reference
    models["unet"].load_state_dict(override, strict=False)
    return root, configs, models, override


@pytest.fixture(scope="module")
def converted(sources):
    root, *_ = sources
    out = root / "converted"
    result = run_cli("controlnext-convert", f"svd={root / 'svd'}", f"controlnext={root / 'controlnet.bin'}",
                     f"unet={root / 'unet.bin'}", f"out={out}", "model=tiny")
    assert result.returncode == 0, result.stderr + result.stdout
    return out


def test_report_accounts_for_every_key(sources, converted):
    _, _, models, override = sources
    report = json.loads((converted / "conversion_report.json").read_text())
    comps = report["components"]
    assert comps["unet"]["num_keys"] == len(models["unet"].state_dict())
    assert sorted(comps["unet"]["overridden"]) == sorted(override)
    assert comps["unet"]["sources"] == {k: "override" if k in override else "base" for k in models["unet"].state_dict()}
    assert comps["unet"]["source_dtypes"] == {"float32": len(models["unet"].state_dict()) - len(override),
                                              "float16": len(override)}
    assert comps["controlnext"]["num_keys"] == len(models["controlnext"].state_dict())
    assert comps["vae"]["num_keys"] == len(models["vae"].state_dict())
    for name, module in models.items():
        assert comps[name]["num_params"] == sum(p.numel() for p in module.parameters()), name
    assert (converted / "conversion_report.md").read_text().startswith("# Conversion report")
    assert len(report["source_sha256"]) == 5  # unet base + override, vae, image encoder, controlnet


@pytest.mark.parametrize("case,kwargs", [
    ("controlnext", {}), ("vae.encode", {}), ("vae.decode", {"frames": 1}), ("vae.decode", {"frames": 3}),
    ("vae.decode", {"frames": 4}), ("image_encoder", {}), ("unet", {}), ("unet+control", {}),
])
def test_converted_component_matches_torch(sources, converted, case, kwargs):
    """Loaded through the real checkpoint loader; the UNet reference has unet.bin applied."""
    _, _, models, _ = sources
    component, run_case = CASES[case]
    ours, ref = run_case(load_component(converted, component), models[component], torch.Generator().manual_seed(7),
                         **kwargs)
    assert rel_err(ours, ref) < TOL, case


def test_export_round_trips_bit_exactly(sources, converted, tmp_path):
    root, _, models, _ = sources
    out = tmp_path / "exported"
    result = run_cli("controlnext-export", f"ckpt={converted}", f"out={out}")
    assert result.returncode == 0, result.stderr + result.stdout
    for name, filename in [("unet", "diffusion_pytorch_model.safetensors"),
                           ("vae", "diffusion_pytorch_model.safetensors"), ("image_encoder", "model.safetensors")]:
        exported = load_safetensors(out / name / filename)
        # the reference UNet already has unet.bin applied (fp16 values upcast, as torch does)
        source = {k: v.numpy() for k, v in models[name].state_dict().items() if k in exported}
        assert sorted(source) == sorted(exported), name
        for key, value in source.items():
            assert exported[key].dtype == value.dtype and np.array_equal(exported[key], value), (name, key)
    controlnet = torch.load(out / "controlnet.bin", weights_only=True)
    for key, value in models["controlnext"].state_dict().items():
        assert torch.equal(controlnet[key], value), key
    # the exported folder is loadable by diffusers itself
    from diffusers import UNetSpatioTemporalConditionModel

    reloaded = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet")
    for key, value in models["unet"].state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_fp16_variant_and_half_storage_round_trip(sources, tmp_path):
    root, configs, models, _ = sources
    svd16 = write_svd_folder(tmp_path / "svd16", models, configs, variant="fp16")
    assert (svd16 / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    out = tmp_path / "conv16"
    convert_checkpoint(svd16, root / "controlnet.bin", out, dtype="float16",
                       controlnext_config=configs["controlnext"], log=lambda *_: None)
    from controlnext_jax.checkpoint.export import component_state_dict

    exported = component_state_dict(out, "vae")
    source = load_safetensors(svd16 / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    for key, value in source.items():
        assert exported[key].dtype == np.float16 and np.array_equal(exported[key], value), key


def test_bfloat16_storage_in_many_parts(sources, tmp_path, monkeypatch):
    root, configs, models, _ = sources
    monkeypatch.setattr(store, "PART_BYTES", 64 << 10)  # force many orbax parts per component
    out = tmp_path / "bf16"
    convert_checkpoint(root / "svd", root / "controlnet.bin", out, dtype="bfloat16",
                       controlnext_config=configs["controlnext"], log=lambda *_: None)
    assert len(json.loads((out / "controlnext" / "parts.json").read_text())) > 3
    model = load_component(out, "controlnext")
    assert model.mid_convs[1].kernel[...].dtype == jnp.bfloat16
    ours, ref = CASES["controlnext"][1](load_component(out, "controlnext", param_dtype=jnp.float32),
                                        models["controlnext"], torch.Generator().manual_seed(3))
    assert 1e-5 < rel_err(ours, ref) < 2e-2  # bf16 weights: close, but not float32-exact


# -- bad input: a clear error naming the file/key, and no output left behind -----------------------

def _convert_fails(root, configs, tmp_path, match, **kw):
    args = dict(svd=root / "svd", controlnext=root / "controlnet.bin", out=tmp_path / "out")
    args.update(kw)
    with pytest.raises(CheckpointError, match=match):
        convert_checkpoint(args.pop("svd"), args.pop("controlnext"), args.pop("out"),
                           controlnext_config=configs["controlnext"], log=lambda *_: None, **args)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_wrong_typed_config_json_names_the_file(sources, tmp_path):
    # a hand-edited config.json: one line naming the file and the key, before any weight is read
    root, configs, *_ = sources
    svd = tmp_path / "svd_bad"
    shutil.copytree(root / "svd", svd, ignore=shutil.ignore_patterns("*.safetensors"))
    path = svd / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "block_out_channels": "32,64"}))
    with pytest.raises(UserError) as info:
        convert_checkpoint(svd, root / "controlnet.bin", tmp_path / "out", controlnext_config=configs["controlnext"],
                           log=lambda *_: None)
    assert str(info.value) == f"{path}: UNetConfig.block_out_channels='32,64': must be a list of integers"
    assert not (tmp_path / "out").exists()


def test_missing_file(sources, tmp_path):
    root, configs, *_ = sources
    _convert_fails(root, configs, tmp_path, "nope.bin: file not found", controlnext=tmp_path / "nope.bin")


def test_truncated_files(sources, tmp_path):
    root, configs, *_ = sources
    data = (root / "controlnet.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    _convert_fails(root, configs, tmp_path, "cut.bin", controlnext=tmp_path / "cut.bin")
    svd = tmp_path / "svd_cut"
    shutil.copytree(root / "svd", svd)
    weights = svd / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _convert_fails(root, configs, tmp_path, "diffusion_pytorch_model.safetensors.*truncated", svd=svd)


def test_unknown_key_and_shape_mismatch(sources, tmp_path):
    root, configs, models, _ = sources
    state = dict(models["controlnext"].state_dict())
    state["extra.weight"] = torch.randn(3)
    torch.save(state, tmp_path / "extra.bin")
    _convert_fails(root, configs, tmp_path, r"extra.bin: 1 key\(s\) unknown.*extra.weight", controlnext=tmp_path / "extra.bin")
    state = dict(models["controlnext"].state_dict())
    state["mid_convs.1.weight"] = torch.randn(5, 64, 1, 1)
    torch.save(state, tmp_path / "shape.bin")
    _convert_fails(root, configs, tmp_path, r"shape.bin: key 'mid_convs.1.weight' has shape \(5, 64, 1, 1\).*"
                   r"expects \(32, 64, 1, 1\)", controlnext=tmp_path / "shape.bin")
    state = dict(models["controlnext"].state_dict())
    del state["embedding.0.bias"]
    torch.save(state, tmp_path / "missing.bin")
    _convert_fails(root, configs, tmp_path, r"1 controlnext parameter\(s\) missing.*embedding.0.bias",
                   controlnext=tmp_path / "missing.bin")


class _Payload:
    """Unpickling this runs a shell command that creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_pickle_with_code_is_refused(sources, tmp_path, fmt):
    # a controlnet.bin carrying code, in torch's zip format and as a bare (legacy-format) pickle
    root, configs, models, _ = sources
    marker = tmp_path / "payload_ran"
    state = {**models["controlnext"].state_dict(), "x": _Payload(marker)}
    evil = tmp_path / "evil.bin"
    if fmt == "torch.save":
        torch.save(state, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(state, f)
    _convert_fails(root, configs, tmp_path, "evil.bin: cannot load.*weights_only=True", controlnext=evil)
    # refused before the payload could run (an unrestricted unpickler runs it, then fails or not)
    assert not marker.exists()


def test_cli_reports_bad_dtype_and_existing_output(sources, converted):
    root, *_ = sources
    result = run_cli("controlnext-convert", f"svd={root / 'svd'}", f"controlnext={root / 'controlnet.bin'}",
                     f"out={root / 'x'}", "dtype=int8", "model=tiny")
    assert result.returncode == 2 and "dtype='int8': allowed values are float32, bfloat16, float16" in result.stderr
    result = run_cli("controlnext-convert", f"svd={root / 'svd'}", f"controlnext={root / 'controlnet.bin'}",
                     f"out={converted}", "model=tiny")
    assert result.returncode == 2 and "already exists" in result.stderr
