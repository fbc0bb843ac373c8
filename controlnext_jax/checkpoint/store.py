"""The converted-checkpoint folder: orbax checkpoints per component plus `pipeline.json`.

    <ckpt>/pipeline.json             format tag, parameter dtype, every component's config
    <ckpt>/<component>/parts.json    the part names, in order
    <ckpt>/<component>/part-NNN/     orbax checkpoint: a nested dict keyed by NNX path
                                     (list indices as strings), at most ~1 GiB each
    <ckpt>/conversion_report.{json,md}

or, for a small model shipped as plain files (the embedded model, docs/embedded_model.md),
    <ckpt>/<component>/params.safetensors   every array keyed by its NNX path joined with "/"

Parameters are stored by path, not as a pickled graph, so loading builds the model
abstractly from its config and fills it: no code is executed from the checkpoint.
Parts bound the memory of writing: orbax holds about 1.5 extra copies of what it saves,
so saving a 6 GB UNet in one piece would need ~15 GB.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from controlnext_jax.checkpoint.torch_layout import materialize, param_table
from controlnext_jax.errors import UserError
from controlnext_jax.models.components import COMPONENTS

FORMAT = "controlnext-jax/1"
PIPELINE_FILE = "pipeline.json"
PART_BYTES = 1 << 30
SAFETENSORS_FILE = "params.safetensors"
STORAGES = ("orbax", "safetensors")


def nest(flat: dict[tuple, Any]) -> dict:
    """{(a, 0, b): x} -> {"a": {"0": {"b": x}}}: orbax wants string keys."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = value
    return tree


def flatten(tree: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Inverse of `nest`, with every path element a string."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def save_params(folder: Path, params: Iterable[tuple[tuple, np.ndarray]], part_bytes: int | None = None,
                storage: str = "orbax") -> None:
    """Write (path, array) pairs as orbax parts of about `part_bytes` (default PART_BYTES) each,
    or (storage="safetensors") as one safetensors file: plain, for models small enough to hold at once."""
    part_bytes = part_bytes or PART_BYTES
    folder = Path(folder).absolute()
    folder.mkdir(parents=True)
    if storage == "safetensors":
        from safetensors.flax import save_file

        save_file({"/".join(map(str, path)): jnp.asarray(array) for path, array in params}, folder / SAFETENSORS_FILE)
        return
    if storage != "orbax":
        raise ValueError(f"storage={storage!r}; allowed: {list(STORAGES)}")
    checkpointer = ocp.StandardCheckpointer()
    names: list[str] = []
    part: dict[tuple, np.ndarray] = {}
    size = 0

    def flush() -> None:
        nonlocal part, size
        names.append(f"part-{len(names):03d}")
        checkpointer.save(folder / names[-1], nest(part))
        checkpointer.wait_until_finished()
        part, size = {}, 0
        _return_freed_memory()

    for path, array in params:
        part[path] = array
        size += array.nbytes
        if size >= part_bytes:
            flush()
    if part or not names:
        flush()
    (folder / "parts.json").write_text(json.dumps(names))


def _return_freed_memory() -> None:
    """Hand memory freed by orbax's writer threads back to the OS (glibc keeps ~0.8 GB per GiB
    written in its arenas otherwise, and the next part would stack on top of it)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to do
        pass


def load_params(folder: Path) -> dict[tuple[str, ...], np.ndarray]:
    """All stored arrays of one component, keyed by string path."""
    folder = Path(folder).absolute()
    if (folder / SAFETENSORS_FILE).is_file():
        from safetensors import SafetensorError
        from safetensors.flax import load_file

        try:
            stored = load_file(folder / SAFETENSORS_FILE)
        except (SafetensorError, OSError) as e:
            raise UserError(f"{folder / SAFETENSORS_FILE}: unreadable ({e})") from None
        return {tuple(key.split("/")): np.asarray(value) for key, value in stored.items()}
    names_file = folder / "parts.json"
    if not names_file.is_file():
        raise UserError(f"{names_file}: missing (incomplete checkpoint folder)")
    checkpointer = ocp.StandardCheckpointer()
    values: dict[tuple[str, ...], np.ndarray] = {}
    for name in json.loads(names_file.read_text()):
        values.update(flatten(checkpointer.restore(folder / name)))
    return values


def read_pipeline(ckpt: str | Path) -> dict:
    path = Path(ckpt) / PIPELINE_FILE
    if not path.is_file():
        raise UserError(f"ckpt={ckpt}: not a converted controlnext-jax checkpoint (no {PIPELINE_FILE}; "
                        "run controlnext-convert first)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not format {FORMAT!r}")
    return meta


def trained_control_weight(ckpt: str | Path) -> float:
    """The pose control weight a checkpoint runs at, as controlnext-animate applies it: its
    inference_defaults' `controlnext_cond_scale` (the export of a run with `control_scale`), else
    the endpoint's default (1.0)."""
    from controlnext_jax.endpoint import PARAMETERS

    defaults = read_pipeline(ckpt).get("inference_defaults") or {}
    return float(defaults.get("controlnext_cond_scale", PARAMETERS["controlnext_cond_scale"].default))


def stored_params(ckpt: str | Path, name: str, abstract: nnx.Module) -> dict[tuple, np.ndarray]:
    """The stored arrays of component `name`, keyed by the NNX paths of `abstract` (checked complete)."""
    values = load_params(Path(ckpt) / name)
    table = param_table(abstract)
    out = {}
    for key, slot in table.items():
        array = values.pop(tuple(map(str, slot.path)), None)
        if array is None or tuple(array.shape) != slot.shape:
            found = None if array is None else tuple(array.shape)
            raise UserError(f"{Path(ckpt) / name}: parameter {key} has shape {found}, the model expects {slot.shape}")
        out[slot.path] = array
    if values:
        raise UserError(f"{Path(ckpt) / name}: {len(values)} stored arrays unknown to the model, "
                         f"first: {['/'.join(p) for p in list(values)[:5]]}")
    return out


def load_component(ckpt: str | Path, name: str, *, param_dtype=None, dtype=None) -> nnx.Module:
    """Build component `name` from its stored config and fill it with the stored parameters.

    `param_dtype` casts the stored parameters (default: as stored); `dtype` is the
    compute dtype of the layers (default: the parameter dtype).
    """
    meta = read_pipeline(ckpt)
    if name not in COMPONENTS or name not in meta["components"]:
        raise UserError(f"component {name!r} not in {ckpt} (has {sorted(meta['components'])})")
    component = COMPONENTS[name]
    config = component.config_from_dict(meta["components"][name], source=_config_source(ckpt, name))
    param_dtype = jnp.dtype(param_dtype or meta["param_dtype"])
    abstract = component.build_abstract(config, param_dtype=param_dtype, dtype=dtype)
    return materialize(abstract, stored_params(ckpt, name, abstract), param_dtype=param_dtype)


def load_component_config(ckpt: str | Path, name: str):
    return COMPONENTS[name].config_from_dict(read_pipeline(ckpt)["components"][name], source=_config_source(ckpt, name))


def _config_source(ckpt: str | Path, name: str) -> str:
    return f"{Path(ckpt) / PIPELINE_FILE} (components.{name})"


def checkpoint_digest(ckpt: str | Path) -> dict[str, str]:
    """What identifies a checkpoint without reading gigabytes: the sha256 of pipeline.json
    (every component's config) and of the conversion report (the source files' sha256)."""
    digest = {}
    for name in (PIPELINE_FILE, "conversion_report.json"):
        path = Path(ckpt) / name
        if path.is_file():
            digest[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
