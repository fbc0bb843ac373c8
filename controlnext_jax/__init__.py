"""controlnext-jax: ControlNeXt-SVD in JAX / Flax NNX.

`load_pipeline` is imported on first use, so `import controlnext_jax` stays cheap (no JAX,
Flax or model code is loaded until a pipeline is asked for).
"""

__all__ = ["load_pipeline"]


def __getattr__(name: str):
    if name == "load_pipeline":
        from controlnext_jax.pipeline import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'controlnext_jax' has no attribute {name!r}")
