"""Logical axes -> mesh axes: the PartitionSpec of every parameter and of the batch (docs/scaling.md).

Rules map each logical axis (`logical_axes.LOGICAL_AXES`) to a tuple of mesh axes (the
dimension is split over their product) or to () (replicated). A parameter's spec is read
dimension by dimension from its annotation, with two fallbacks, both to replication:

- a mesh axis already used by an earlier dimension of the same parameter is dropped (a
  mesh axis can split one dimension only): with `embed: fsdp` and `mlp: [fsdp, tensor]`
  an (embed, mlp) kernel is (fsdp, tensor);
- a dimension whose size is not divisible by the product of its mesh axes is replicated:
  XLA would pad it to equal shards, which costs memory and confuses checkpoint layouts,
  and such dimensions are small here (a UNet's 4 output channels, CLIP's 257 positions).

Unannotated variables (none in our models) and parameters annotated None are replicated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from controlnext_jax.errors import UserError
from controlnext_jax.sharding.logical_axes import (
    BATCH,
    CONV_IN,
    CONV_OUT,
    DATA,
    EMBED,
    FSDP,
    HEADS,
    LOGICAL_AXES,
    MESH_AXES,
    METADATA_KEY,
    MLP,
    NORM,
    TENSOR,
    VOCAB,
)

Rules = dict[str, tuple[str, ...]]

# Why these defaults (docs/scaling.md, Rules):
# - batch over data and fsdp: both are data parallel, every device gets its own videos;
# - fsdp splits each big parameter once, on its model-width side (embed for linear layers,
#   conv_out for convolutions): every UNet kernel above 1 MB has such a dimension divisible by 8;
# - tensor splits attention heads and MLP widths (Megatron style: q/k/v and the up projection
#   column-wise, out and down projections row-wise); convolutions stay whole over tensor;
# - norms, embedding rows and conv inputs replicated: small, or would conflict with conv_out;
# - nothing maps to data: parameters are replicated over it.
DEFAULT_RULES: Rules = {
    BATCH: (DATA, FSDP),
    EMBED: (FSDP,),
    MLP: (TENSOR,),
    HEADS: (TENSOR,),
    CONV_IN: (),
    CONV_OUT: (FSDP,),
    NORM: (),
    VOCAB: (),
}


def check_rules(rules: Mapping, *, where: str = "mesh.rules") -> Rules:
    """Rules from a plain mapping (logical axis -> mesh axis name, list of names, or None), checked."""
    unknown = sorted(set(rules) - set(LOGICAL_AXES))
    if unknown:
        raise UserError(f"{where}: unknown logical axis {unknown[0]!r}; allowed: {list(LOGICAL_AXES)}")
    missing = [name for name in LOGICAL_AXES if name not in rules]
    if missing:
        raise UserError(f"{where}: no rule for logical axis {missing[0]!r} (give a mesh axis, a list, or null)")
    out: Rules = {}
    for name in LOGICAL_AXES:
        value = rules[name]
        axes = () if value is None else (value,) if isinstance(value, str) else tuple(value)
        for axis in axes:
            if axis not in MESH_AXES:
                raise UserError(f"{where}.{name}: {axis!r} is not a mesh axis; allowed: {list(MESH_AXES)} or null")
        if len(set(axes)) != len(axes):
            raise UserError(f"{where}.{name}: mesh axis repeated in {list(axes)}")
        out[name] = axes
    return out


def axis_sizes(mesh) -> dict[str, int]:
    """{mesh axis: size} of a Mesh or AbstractMesh."""
    return dict(mesh.shape)


def spec_for(axes: tuple, shape: tuple[int, ...], rules: Rules, sizes: Mapping[str, int]) -> PartitionSpec:
    """The PartitionSpec of one array annotated with logical `axes` (see the module docstring)."""
    return _place(axes, shape, rules, sizes)[0]


def _place(axes: tuple, shape: tuple[int, ...], rules: Rules, sizes: Mapping[str, int]):
    """(PartitionSpec, whether a dimension fell back to replication for divisibility)."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match shape {shape}")
    used: set[str] = set()
    entries, fell_back = [], False
    for name, size in zip(axes, shape):
        # axes of size 1 split nothing: leaving them out keeps specs short and comparable
        mesh_axes = () if name is None else tuple(a for a in rules[name] if a not in used and sizes.get(a, 1) > 1)
        if mesh_axes and size % math.prod(sizes[a] for a in mesh_axes):
            fell_back, mesh_axes = True, ()
        used.update(mesh_axes)
        entries.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    while entries and entries[-1] is None:  # P('fsdp', None) == P('fsdp'): the short form prints better
        entries.pop()
    return PartitionSpec(*entries), fell_back


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _logical_axes(leaf) -> tuple | None:
    if isinstance(leaf, nnx.Variable) and leaf.has_metadata(METADATA_KEY):
        return tuple(leaf.get_metadata(METADATA_KEY))
    return None


def _map_arrays(fn, tree):
    """fn(logical axes or None, array-like) for every array of `tree`; Variables keep their wrapper."""

    def per_leaf(leaf):
        if isinstance(leaf, nnx.Variable):
            return leaf.replace(fn(_logical_axes(leaf), leaf.get_value()))
        return fn(None, leaf)

    return jax.tree.map(per_leaf, tree, is_leaf=_is_variable)


def param_partition_specs(tree, rules: Rules, mesh):
    """A PartitionSpec for every array of `tree` (nnx States, optimizer states, concrete or abstract):
    from its Variable's logical axes under `rules`, P() (replicated) for anything unannotated."""
    sizes = axis_sizes(mesh)
    return _map_arrays(lambda axes, x: PartitionSpec() if axes is None else spec_for(axes, x.shape, rules, sizes),
                       tree)


def param_shardings(tree, rules: Rules, mesh):
    """`param_partition_specs` as NamedShardings on `mesh`."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_partition_specs(tree, rules, mesh),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def fallbacks(tree, rules: Rules, mesh) -> list[tuple[str, tuple[int, ...], tuple]]:
    """(dotted path, shape, logical axes) of every parameter with a dimension that a rule would
    shard but that stays replicated because its size is not divisible by the mesh axes."""
    sizes = axis_sizes(mesh)
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]:
        axes = _logical_axes(leaf)
        if axes is not None and _place(axes, leaf.get_value().shape, rules, sizes)[1]:
            name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            out.append((name, tuple(leaf.get_value().shape), axes))
    return out


def batch_spec(rules: Rules) -> PartitionSpec:
    """Batch inputs: leading axis over the `batch` rule's mesh axes, the rest whole."""
    axes = rules[BATCH]
    return PartitionSpec(axes if axes else None)


def batch_shards(rules: Rules, mesh) -> int:
    """How many ways the batch is split (its size must be a multiple)."""
    sizes = axis_sizes(mesh)
    return math.prod(sizes[a] for a in rules[BATCH])
