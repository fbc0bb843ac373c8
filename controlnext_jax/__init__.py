"""controlnext-jax: ControlNeXt-SVD in JAX / Flax NNX.

`load_pipeline` is imported on first use, so `import controlnext_jax` stays cheap (no JAX,
Flax or model code is loaded until a pipeline is asked for). Importing it does set the
package's default XLA flags (`controlnext_jax.xla_flags`: CPU compiler options, never one the
user set in XLA_FLAGS), before JAX creates its backend.
"""

from controlnext_jax.xla_flags import apply_default_xla_flags

apply_default_xla_flags()

__all__ = ["load_pipeline"]


def __getattr__(name: str):
    if name == "load_pipeline":
        from controlnext_jax.pipeline import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'controlnext_jax' has no attribute {name!r}")
