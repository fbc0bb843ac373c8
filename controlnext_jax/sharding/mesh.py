"""The device mesh and the sharding rules from the `mesh` config group (configs/mesh/*.yaml, docs/scaling.md).

    mesh:
      shape: {data: -1, fsdp: 1, tensor: 1}   # -1: all remaining devices (at most one axis)
      rules: {batch: [data, fsdp], embed: fsdp, ...}
      distributed: false                      # true: jax.distributed.initialize() first (multi-host)

The mesh spans every device of every process (`jax.devices()`), so the same command runs
on each host of a multi-host job; each process then holds only its devices' shards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from controlnext_jax.errors import UserError
from controlnext_jax.sharding.logical_axes import MESH_AXES
from controlnext_jax.sharding.rules import DEFAULT_RULES, Rules, check_rules


def _plain(cfg) -> dict:
    """A DictConfig or mapping -> plain dict (Hydra's containers resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # omegaconf comes with hydra-core; plain dicts work without it
        pass
    return dict(cfg)


def mesh_shape(shape: Mapping, device_count: int) -> dict[str, int]:
    """{data, fsdp, tensor} sizes with -1 resolved; UserError unless their product is `device_count`."""
    shape = _plain(shape)
    if set(shape) != set(MESH_AXES):
        raise UserError(f"mesh.shape: keys {sorted(shape)}; expected exactly {list(MESH_AXES)}")
    sizes = {}
    for axis in MESH_AXES:
        value = shape[axis]
        if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
            raise UserError(f"mesh.shape.{axis}={value!r}; allowed: a positive integer or -1 (remaining devices)")
        sizes[axis] = value
    free = [a for a in MESH_AXES if sizes[a] == -1]
    if len(free) > 1:
        raise UserError(f"mesh.shape: -1 on {free}; at most one axis may take the remaining devices")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if device_count % fixed:
            raise UserError(f"mesh.shape={shape}: the fixed axes ({fixed} devices) do not divide the "
                            f"device count {device_count}")
        sizes[free[0]] = device_count // fixed
    if math.prod(sizes.values()) != device_count:
        raise UserError(f"mesh.shape={shape}: {math.prod(sizes.values())} devices, but there are {device_count} "
                        f"(the product of data, fsdp and tensor must equal the device count)")
    return sizes


def mesh_from_config(cfg: Mapping, devices: Sequence | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh of `cfg["shape"]` over `devices` (default: all devices of all hosts)."""
    cfg = _plain(cfg)
    if "shape" not in cfg:
        raise UserError("mesh.shape: missing; e.g. {data: -1, fsdp: 1, tensor: 1}")
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(cfg["shape"], len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    if len(devices) == len(jax.devices()):
        # jax.make_mesh orders devices by the physical topology (TPU torus, GPU hosts), so the
        # innermost axis (tensor) lands on the best-connected devices
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def rules_from_config(cfg: Mapping | None) -> Rules:
    """The checked logical -> mesh rules of `cfg["rules"]` (the defaults when `cfg` is None or has none)."""
    if cfg is None:
        return dict(DEFAULT_RULES)
    cfg = _plain(cfg)
    rules = cfg.get("rules")
    if rules is None:
        return dict(DEFAULT_RULES)
    if not isinstance(rules, Mapping):
        raise UserError(f"mesh.rules: {rules!r}; expected a mapping of logical axis -> mesh axis, list or null")
    return check_rules(rules)


def initialize_distributed(enabled: bool) -> None:
    """`jax.distributed.initialize()` when `enabled` (mesh.distributed); must run before anything
    touches a device. The coordinator, process count and process id come from
    JAX_COORDINATOR_ADDRESS (host:port of process 0) / JAX_NUM_PROCESSES / JAX_PROCESS_ID when set
    (JAX itself reads only the first), else JAX detects them (SLURM, Open MPI, a TPU pod's metadata)."""
    if not enabled:
        return
    kwargs = {}
    for name, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(name):
            try:
                kwargs[key] = int(os.environ[name])
            except ValueError:
                raise UserError(f"{name}={os.environ[name]!r}: expected an integer") from None
    jax.distributed.initialize(**kwargs)
