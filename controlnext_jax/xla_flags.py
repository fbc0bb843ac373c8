"""XLA flags the package sets for itself, as defaults the user can override.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend, so `controlnext_jax/__init__.py`
calls `apply_default_xla_flags()` on import, before any model code runs a computation.

The one default is a CPU compiler option: `--xla_cpu_experimental_ynn_fusion_type=` (empty: no
YNNPACK fusions). With it on, XLA:CPU hands dots and convolutions to YNNPACK, which on the SVD
UNet's shapes is slower than the Eigen kernels it replaces; the measurements are in
BENCHMARKS.md ("CPU lowering"). GPU and TPU compilers ignore `xla_cpu_*` options.

Rules: a flag the user already put in `XLA_FLAGS` (with any value) is never touched, and
`CONTROLNEXT_JAX_XLA_DEFAULTS=0` turns all
package defaults off. Nothing happens if JAX's backend already exists (the flags would be read
by nobody); the caller then keeps whatever XLA started with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# flag name -> value; "" means "--name=" (an empty value), which XLA accepts for string flags
DEFAULT_CPU_FLAGS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}

OPT_OUT_VARIABLE = "CONTROLNEXT_JAX_XLA_DEFAULTS"


def flag_names(xla_flags: str) -> set[str]:
    """The flag names in an XLA_FLAGS string ("--a=1 --b" -> {"a", "b"})."""
    return {token.lstrip("-").split("=", 1)[0] for token in xla_flags.split() if token.startswith("-")}


def _backend_started() -> bool:
    """True when JAX has created a backend already (then XLA_FLAGS is no longer read)."""
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(xla_bridge is not None and getattr(xla_bridge, "_backends", None))


def apply_default_xla_flags(environ: MutableMapping[str, str] | None = None) -> str:
    """Append the package's default XLA flags that the user has not set; returns XLA_FLAGS as left."""
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT_VARIABLE, "1").strip() == "0" or (environ is os.environ and _backend_started()):
        return current
    user_set = flag_names(current)
    added = [f"--{name}={value}" for name, value in DEFAULT_CPU_FLAGS.items() if name not in user_set]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return environ.get("XLA_FLAGS", "")
