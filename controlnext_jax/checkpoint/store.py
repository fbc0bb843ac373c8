"""The converted-checkpoint folder: one orbax checkpoint per component plus `pipeline.json`.

    <ckpt>/pipeline.json            format tag, parameter dtype, every component's config
    <ckpt>/<component>/             orbax checkpoint of the component's parameters, nested
                                    dict keyed by the NNX path (list indices as strings)
    <ckpt>/conversion_report.{json,md}

Parameters are stored by path, not as a pickled graph, so loading builds the model
abstractly from its config and fills it: no code is executed from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from controlnext_jax.checkpoint.torch_layout import materialize, param_table
from controlnext_jax.models.components import COMPONENTS

FORMAT = "controlnext-jax/1"
PIPELINE_FILE = "pipeline.json"


def nest(flat: dict[tuple, Any]) -> dict:
    """{(a, 0, b): x} -> {"a": {"0": {"b": x}}}: orbax wants string keys."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = value
    return tree


def _lookup(tree: dict, path: tuple) -> Any:
    for part in path:
        tree = tree[str(part)]
    return tree


def save_params(folder: Path, flat: dict[tuple, np.ndarray]) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(folder).absolute(), nest(flat))
    checkpointer.wait_until_finished()


def read_pipeline(ckpt: str | Path) -> dict:
    path = Path(ckpt) / PIPELINE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a converted controlnext-jax checkpoint (run controlnext-convert first)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_component(ckpt: str | Path, name: str, *, param_dtype=None, dtype=None) -> nnx.Module:
    """Build component `name` from its stored config and fill it with the stored parameters.

    `param_dtype` casts the stored parameters (default: as stored); `dtype` is the
    compute dtype of the layers (default: the parameter dtype).
    """
    meta = read_pipeline(ckpt)
    if name not in COMPONENTS or name not in meta["components"]:
        raise KeyError(f"component {name!r} not in {ckpt} (has {sorted(meta['components'])})")
    component = COMPONENTS[name]
    config = component.config_from_dict(meta["components"][name])
    stored_dtype = jnp.dtype(meta["param_dtype"])
    param_dtype = jnp.dtype(param_dtype or stored_dtype)
    abstract = component.build_abstract(config, param_dtype=param_dtype, dtype=dtype)
    table = param_table(abstract)
    target = nest({slot.path: jax.ShapeDtypeStruct(slot.shape, stored_dtype) for slot in table.values()})
    restored = ocp.StandardCheckpointer().restore((Path(ckpt) / name).absolute(), target)
    return materialize(abstract, {slot.path: _lookup(restored, slot.path) for slot in table.values()},
                       param_dtype=param_dtype)


def load_component_config(ckpt: str | Path, name: str):
    return COMPONENTS[name].config_from_dict(read_pipeline(ckpt)["components"][name])
