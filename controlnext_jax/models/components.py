"""The networks of a ControlNeXt-SVD pipeline, by component name.

One place that knows which config and model class each component uses, so conversion,
export and loading code treat them uniformly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from flax import nnx


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    config_class: str
    model_class: str
    # torch state-dict keys that are not parameters and are dropped on purpose
    ignored_keys: tuple[str, ...] = ()

    def classes(self) -> tuple[Any, Any]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config_class), getattr(mod, self.model_class)

    def config_from_dict(self, d: dict):
        return self.classes()[0].from_dict(dict(d))

    def build(self, config, *, param_dtype=jnp.float32, dtype=None, seed: int = 0) -> nnx.Module:
        return self.classes()[1](config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))

    def build_abstract(self, config, *, param_dtype=jnp.float32, dtype=None) -> nnx.Module:
        """The model with `jax.ShapeDtypeStruct` leaves: shapes without allocating weights."""
        model_class = self.classes()[1]
        return nnx.eval_shape(lambda: model_class(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


COMPONENTS: dict[str, Component] = {
    c.name: c for c in (
        Component("unet", "controlnext_jax.models.unet_spatio_temporal", "UNetConfig",
                  "UNetSpatioTemporalConditionModel"),
        Component("vae", "controlnext_jax.models.vae_temporal", "VAEConfig", "AutoencoderKLTemporalDecoder"),
        Component("image_encoder", "controlnext_jax.models.clip_vision", "CLIPVisionConfig",
                  "CLIPVisionModelWithProjection", ignored_keys=("vision_model.embeddings.position_ids",)),
        Component("controlnext", "controlnext_jax.models.controlnext", "ControlNeXtConfig", "ControlNeXtSDVModel"),
    )
}
