"""A controlnext-jax checkpoint -> PyTorch layouts, so weights tuned here return to PyTorch.

Writes a diffusers-layout folder (`unet/`, `vae/`, `image_encoder/` with `config.json` and
`*.safetensors`, plus `scheduler/` and `feature_extractor/` configs) and the ControlNeXt
state dict as `controlnet.safetensors` and, when torch is installed, `controlnet.bin`
(the release's format). Convert followed by export reproduces the source tensors bit
for bit when the dtype is unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.checkpoint.convert import DTYPES
from controlnext_jax.checkpoint.store import load_component_config, read_pipeline, stored_params
from controlnext_jax.checkpoint.torch_layout import param_table, to_torch_layout
from controlnext_jax.errors import require_choice
from controlnext_jax.models.components import COMPONENTS

FOLDER_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                "image_encoder": "model.safetensors"}


def component_state_dict(ckpt: str | os.PathLike, name: str, dtype: str | None = None) -> dict[str, np.ndarray]:
    """The stored parameters of one component as a torch-layout state dict (numpy)."""
    meta = read_pipeline(ckpt)
    abstract = COMPONENTS[name].build_abstract(load_component_config(ckpt, name), param_dtype=meta["param_dtype"])
    values = stored_params(ckpt, name, abstract)
    out = {}
    for key, slot in param_table(abstract).items():
        array = np.asarray(values.pop(slot.path))
        if dtype is not None:
            array = array.astype(jnp.dtype(dtype))
        out[key] = to_torch_layout(array, slot.layout)
    return out


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, *, dtype: str | None = None,
                      overwrite: bool = False, log=print) -> None:
    require_choice("dtype", dtype, (None, *DTYPES))
    out = check_output(out, inputs={"ckpt": ckpt}, overwrite=overwrite)
    ckpt = Path(ckpt)
    meta = read_pipeline(ckpt)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for name, filename in tqdm(FOLDER_FILES.items(), desc="[export]", unit="component", leave=False,
                                   disable=None):  # a bar on a terminal only
            (tmp / name).mkdir()
            save_file(component_state_dict(ckpt, name, dtype), str(tmp / name / filename))
            config = meta.get("source_configs", {}).get(name, meta["components"][name])
            (tmp / name / "config.json").write_text(json.dumps(config, indent=2))
            log(f"[export] {name} -> {tmp.name}/{name}/{filename}")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(meta["scheduler"], indent=2))
        if meta.get("feature_extractor"):
            (tmp / "feature_extractor").mkdir()
            (tmp / "feature_extractor" / "preprocessor_config.json").write_text(
                json.dumps(meta["feature_extractor"], indent=2))
        controlnext = component_state_dict(ckpt, "controlnext", dtype)
        save_file(controlnext, str(tmp / "controlnet.safetensors"))
        log("[export] controlnext -> controlnet.safetensors")
        if _save_torch_pickle(controlnext, tmp / "controlnet.bin"):
            log("[export] controlnext -> controlnet.bin")
        else:
            log("[export] torch not installed: controlnet.bin (the release's format) not written")


def _save_torch_pickle(state_dict: dict[str, np.ndarray], path: Path) -> bool:
    try:
        import torch
    except ImportError:
        return False

    def tensor(a: np.ndarray):
        if a.dtype.name == "bfloat16":  # numpy has no native bfloat16: reinterpret the bits
            return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(a))

    torch.save({k: tensor(v) for k, v in state_dict.items()}, path)
    return True
