"""The map between PyTorch state-dict keys and our NNX parameter paths.

Our modules mirror the PyTorch attribute names, so the map is derived from the NNX
module tree itself: the torch key of a parameter is its NNX path joined with dots,
with Flax leaf names turned back into torch ones (`kernel`/`scale`/`embedding` ->
`weight`) and the layout transposes that the owning layer type implies:

- `nnx.Linear.kernel`  (in, out)          <- torch weight (out, in)
- `nnx.Conv.kernel`    (*spatial, in, out) <- torch weight (out, in, *spatial)
- everything else is copied as is (norm scale/bias, embeddings, mix factors, ...).

The table is built from an abstract model (`nnx.eval_shape`), so checking a full-size
configuration allocates no weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.errors import UserError

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


@dataclass(frozen=True)
class ParamSlot:
    """One target parameter: where it lives, its shape/dtype, and how torch lays it out."""

    path: tuple[str | int, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    layout: str  # "linear" | "conv" | "copy"

    @property
    def torch_shape(self) -> tuple[int, ...]:
        if self.layout == "linear":
            return (self.shape[1], self.shape[0])
        if self.layout == "conv":
            return (self.shape[-1], self.shape[-2], *self.shape[:-2])
        return self.shape


def _owner(model: nnx.Module, path: tuple) -> object:
    node = model
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def param_table(model: nnx.Module) -> dict[str, ParamSlot]:
    """torch key -> ParamSlot for every nnx.Param of `model` (concrete or abstract)."""
    table: dict[str, ParamSlot] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        owner = _owner(model, path)
        leaf = path[-1]
        layout = "copy"
        if leaf == "kernel" and isinstance(owner, nnx.Linear):
            layout = "linear"
        elif leaf == "kernel" and isinstance(owner, nnx.Conv):
            layout = "conv"
        key = ".".join(str(p) for p in (*path[:-1], _LEAF_TO_TORCH.get(leaf, leaf)))
        value = var.get_value()
        table[key] = ParamSlot(tuple(path), tuple(value.shape), np.dtype(value.dtype), layout)
    return table


def to_flax_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return np.ascontiguousarray(array.T)
    if layout == "conv":
        # (out, in, *spatial) -> (*spatial, in, out)
        return np.ascontiguousarray(np.moveaxis(array, (0, 1), (-1, -2)))
    return array


def to_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return np.ascontiguousarray(array.T)
    if layout == "conv":
        return np.ascontiguousarray(np.moveaxis(array, (-1, -2), (0, 1)))
    return array


class LayoutError(UserError):
    """A state dict does not fit a model: names the file, key and shapes."""


def assign_state_dict(model: nnx.Module, state_dict: dict[str, np.ndarray], *, source: str = "<state dict>",
                      ignore: tuple[str, ...] = ()) -> None:
    """Load a torch-layout state dict (numpy arrays) into `model` in place, strictly.

    Every key must be used (except those in `ignore`) and every parameter assigned;
    shapes must match after the layout transpose.
    """
    table = param_table(model)
    unknown = sorted(k for k in state_dict if k not in table and k not in ignore)
    if unknown:
        raise LayoutError(f"{source}: {len(unknown)} unknown key(s), first: {unknown[:5]}")
    missing = sorted(k for k in table if k not in state_dict)
    if missing:
        raise LayoutError(f"{source}: {len(missing)} parameter(s) missing, first: {missing[:5]}")
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for key, slot in table.items():
        array = np.asarray(state_dict[key])
        if tuple(array.shape) != slot.torch_shape:
            raise LayoutError(f"{source}: key {key!r} has shape {tuple(array.shape)}, "
                              f"expected {slot.torch_shape} (torch layout)")
        flat[slot.path].set_value(jnp.asarray(to_flax_layout(array, slot.layout), dtype=slot.dtype))
    nnx.update(model, state)


def materialize(abstract: nnx.Module, values, *, param_dtype=None) -> nnx.Module:
    """Fill an abstract model (from `nnx.eval_shape`) with parameter values.

    `values` maps an NNX path to its array, or is a function of the path: arrays are then
    produced and placed one at a time, so only one copy of the weights is ever alive (no
    random initialisation happens either).
    """
    get = values if callable(values) else values.get
    graphdef, state = nnx.split(abstract)
    for path, var in nnx.to_flat_state(state):
        value = get(path)
        if value is None:
            raise LayoutError(f"no value for parameter {'/'.join(map(str, path))}")
        var.set_value(jnp.asarray(value, dtype=param_dtype or var.get_value().dtype))
    return nnx.merge(graphdef, state)
