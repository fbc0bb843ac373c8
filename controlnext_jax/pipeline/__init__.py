"""The animate pipeline: `load_pipeline(ckpt)(image, poses, ...)` (docs/sampling.md)."""

from controlnext_jax.pipeline.pipeline import ControlNeXtPipeline, load_pipeline, size_multiple
from controlnext_jax.pipeline.validation import AnimateParams, validate_params

__all__ = ["AnimateParams", "ControlNeXtPipeline", "load_pipeline", "size_multiple", "validate_params"]
