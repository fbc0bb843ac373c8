"""Trained networks -> a converted-checkpoint folder, the format inference and export read.

The folder is the one `controlnext-convert` writes (`controlnext_jax.checkpoint.store`:
`pipeline.json` + per-component orbax parts), so `controlnext_jax.load_pipeline(out)` runs
the trained model and `controlnext-export ckpt=out` turns it into the PyTorch layouts.
All four components are written with their configs: the trained UNet and ControlNeXt
module (from the train state or its EMA, as the caller merges them) and the frozen VAE and
image encoder.

`pipeline.json` fields not about the networks (the scheduler, the feature extractor) come
from `base_ckpt` when given; a component keeps the base's original `config.json`
(`source_configs`, what `controlnext-export` writes back) only when its config is unchanged.
A from-scratch run gets SVD-XT's scheduler (configs/model/svd_xt.yaml), which
`controlnext-convert` would copy from the SVD folder. The `training` field records the
caller's run record, the code version, the base checkpoint's digest and a sha256 of each
component's parameters, so `checkpoint_digest` tells two exports of the same configs apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.checkpoint.convert import DTYPES
from controlnext_jax.checkpoint.store import (
    FORMAT,
    PIPELINE_FILE,
    STORAGES,
    checkpoint_digest,
    read_pipeline,
    save_params,
)
from controlnext_jax.cli import CONFIG_DIR
from controlnext_jax.errors import require_choice
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.provenance import code_version

NETWORK_FIELDS = ("format", "param_dtype", "components", "source_configs", "training")


def default_scheduler() -> dict:
    """SVD-XT's scheduler_config.json, for a checkpoint not derived from a converted one."""
    return yaml.safe_load((CONFIG_DIR / "model" / "svd_xt.yaml").read_text())["scheduler"]


def parameter_arrays(module: nnx.Module, dtype: str, digest) -> Iterator[tuple[tuple, np.ndarray]]:
    """(NNX path, host array in `dtype`) of every parameter, one at a time (one tensor on the host
    at once, as `controlnext-convert` writes); `digest` is fed path, dtype, shape and bytes."""
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        array = np.asarray(var.get_value()).astype(jnp.dtype(dtype), copy=False)
        digest.update(json.dumps([list(map(str, path)), str(array.dtype), list(array.shape)]).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        yield path, array


def export_inference(out: str | os.PathLike, modules: Mapping[str, nnx.Module], *,
                     base_ckpt: str | os.PathLike | None = None, dtype: str = "float32",
                     record: Mapping | None = None, overwrite: bool = False, storage: str = "orbax",
                     inference_defaults: Mapping | None = None, log=print) -> Path:
    """Write `modules` ({"unet", "controlnext", "vae", "image_encoder"}, or the trainer's `Models`)
    as a converted-checkpoint folder `out`, parameters in `dtype`, stored as orbax parts or one
    safetensors file per component (`storage`); returns `out`. `inference_defaults`: animate
    parameters this model is meant to run with (e.g. its training size), which controlnext-animate
    uses where the user gives none (pipeline.json's `inference_defaults`).

    The folder appears only when complete (`atomic_io.atomic_folder`); an existing `out` needs
    `overwrite`."""
    require_choice("dtype", dtype, DTYPES)
    require_choice("storage", storage, STORAGES)
    if hasattr(modules, "_asdict"):  # training.loss.Models
        modules = modules._asdict()
    missing = [name for name in COMPONENTS if name not in modules]
    if missing:
        raise ValueError(f"export_inference: modules lacks {missing} (needs {sorted(COMPONENTS)})")
    out = check_output(out, inputs={"base_ckpt": base_ckpt}, overwrite=overwrite)
    base = read_pipeline(base_ckpt) if base_ckpt is not None else {}
    configs = {name: json.loads(json.dumps(modules[name].config.to_dict())) for name in COMPONENTS}
    # the base's original config.json only where the exported network has the same config
    source_configs = {name: cfg for name, cfg in base.get("source_configs", {}).items()
                      if base["components"].get(name) == configs.get(name)}
    carried = {key: value for key, value in base.items() if key not in NETWORK_FIELDS}
    meta = {"format": FORMAT, "param_dtype": dtype, "components": configs, "source_configs": source_configs,
            "scheduler": default_scheduler(), "feature_extractor": None, **carried}
    if inference_defaults:
        meta["inference_defaults"] = dict(inference_defaults)
    sha256 = {}
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for name in COMPONENTS:
            digest = hashlib.sha256()
            save_params(tmp / name, parameter_arrays(modules[name], dtype, digest), storage=storage)
            sha256[name] = digest.hexdigest()
            log(f"[export] {name} -> {out}/{name}")
        meta["training"] = {"record": dict(record or {}), "code_version": code_version(),
                            "base_ckpt": None if base_ckpt is None else str(base_ckpt),
                            "base_digest": checkpoint_digest(base_ckpt) if base_ckpt is not None else None,
                            "param_sha256": sha256}
        (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
    return out
