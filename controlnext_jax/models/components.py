"""The networks of a ControlNeXt-SVD pipeline, by component name.

One place that knows which config and model class each component uses, so conversion,
export and loading code treat them uniformly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import jax
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

    def config_from_dict(self, d: dict, source: str | None = None):
        """The config dataclass from a config.json / pipeline.json / YAML dict (`config_dict`'s
        policy); `source` names the file or key in errors."""
        return self.classes()[0].from_dict(d, source=source)

    def build_abstract(self, config, *, param_dtype=jnp.float32, dtype=None) -> nnx.Module:
        """The model with `jax.ShapeDtypeStruct` leaves: shapes without allocating weights."""
        return abstract_model(self.classes()[1], config, dtype=dtype, param_dtype=param_dtype)


def abstract_model(model_class, *args, **kwargs) -> nnx.Module:
    """`model_class(*args, **kwargs, rngs=...)` traced with `nnx.eval_shape`: shapes, no weights."""
    return nnx.eval_shape(lambda: model_class(*args, **kwargs, rngs=CountingKeys(0)))


class CountingKeys:
    """Stand-in for `nnx.Rngs` when a model is only traced (`nnx.eval_shape`).

    `nnx.Rngs` increments a traced counter at every key draw and each increment scans
    the trace, so tracing the 1.5e9-parameter UNet takes ~25 s; keys folded from a
    Python counter give the same abstract tree in ~2 s. Layers only call `.params()`.
    """

    def __init__(self, seed: int):
        self.key = jax.random.key(seed)
        self.count = 0

    def params(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)

    __call__ = params


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
