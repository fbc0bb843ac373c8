"""Golden files from the original PyTorch release (tests/data/*.npz, written by
tests/data/make_release_golden.py) and their loading through the conversion's code path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from controlnext_jax.checkpoint.convert import ComponentReport, converted_arrays, plan_component
from controlnext_jax.checkpoint.torch_files import StateDictFile
from controlnext_jax.checkpoint.torch_layout import materialize
from controlnext_jax.models.components import COMPONENTS

DATA = Path(__file__).resolve().parent / "data"
# The release version the golden files were generated from (github.com/dvlab-research/ControlNeXt).
RELEASE_COMMIT = "ab4b3acf"


@dataclass
class Golden:
    meta: dict
    weights: dict[str, np.ndarray]  # torch state-dict key -> float32 array (stored as exact float16)
    arrays: dict[str, np.ndarray]  # "input/...", "output/...", "injection/..." -> float32 array (NCHW)


def load_golden(name: str) -> Golden:
    with np.load(DATA / name, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        weights = {k.removeprefix("weight/"): z[k].astype(np.float32) for k in z.files if k.startswith("weight/")}
        arrays = {k: z[k] for k in z.files if k != "meta" and not k.startswith("weight/")}
    assert meta["release_commit"] == RELEASE_COMMIT, meta["release_commit"]
    return Golden(meta, weights, arrays)


def convert_into(component: str, config, weights: dict[str, np.ndarray], folder: Path) -> nnx.Module:
    """Our `component` model holding `weights`, loaded as `controlnext-convert` loads a release file:
    written as a torch `.bin` (as the release ships `controlnet.bin`) and read back by
    StateDictFile (weights_only), checked by plan_component (every key used, every parameter
    assigned, shapes), transposed by converted_arrays, placed into the abstract model."""
    path = folder / f"{component}.bin"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, path)
    report = ComponentReport(component, {"base": str(path)})
    plan = plan_component(component, config, [("base", StateDictFile(path))], "float32", report)
    abstract = COMPONENTS[component].build_abstract(config, param_dtype=jnp.float32)
    return materialize(abstract, dict(converted_arrays(plan, "float32", report)))


def nhwc(a: np.ndarray) -> np.ndarray:
    """(..., c, h, w) -> (..., h, w, c) of a stored array."""
    return np.ascontiguousarray(np.moveaxis(a, -3, -1))
