"""Spreading the stacked windows over several devices (docs/sampling.md, Several devices).

One mesh axis, `batch`: the model batch of a window group (windows x CFG halves) is split
over it, parameters and inputs are replicated. With one device nothing is constrained and
the program is the plain single-device one.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over `devices` (default: all visible); None for a single device."""
    devices = list(devices) if devices is not None else jax.devices()
    if not devices:
        raise ValueError("devices: empty list")
    return Mesh(np.asarray(devices), (BATCH_AXIS,)) if len(devices) > 1 else None


def replicate(tree, mesh: Mesh | None, device: jax.Device | None = None):
    """Every leaf on every device of the mesh (or on `device` without a mesh)."""
    if mesh is None:
        return jax.device_put(tree, device) if device is not None else tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def batch_constraint(mesh: Mesh | None):
    """x -> x with its leading axis split over the mesh when it divides evenly (else unchanged),
    for use inside the traced program."""
    if mesh is None:
        return lambda x: x
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    size = mesh.size

    def constrain(x: jax.Array) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, sharding) if x.shape[0] % size == 0 else x

    return constrain


def windows_per_call_for(requested: int | None, num_windows: int, cfg_halves: int, num_devices: int) -> int:
    """Windows stacked into one model call.

    Default (None): enough windows to give every device one batch entry (one window on a
    single device). Never more than the windows there are; with several devices then
    rounded up so that windows x CFG halves divide evenly over them (the extra slots are
    weight-0 dummy windows)."""
    w = requested if requested is not None else max(1, -(-num_devices // cfg_halves))
    w = min(w, num_windows)
    if num_devices > 1:
        step = num_devices // np.gcd(num_devices, cfg_halves)
        w = -(-w // step) * step
    return w
