"""The four networks of training, built from configs or a converted checkpoint, optionally straight onto a mesh.

Parameters are float32 (the master weights) and layers compute in `compute_dtype`
(docs/release_semantics.md, Training). With a mesh (docs/scaling.md) nothing is ever whole
on one host: a model is first built abstractly (`nnx.eval_shape`: shapes and logical axes,
no weights), its shardings come from the annotations under the rules, then

- random initialisation runs as one jitted program with those out_shardings, so each device
  computes its own shards (JAX's random bits do not depend on the sharding);
- a checkpoint is restored part by part (controlnext_jax/checkpoint/store.py's orbax parts)
  with sharded targets: orbax reads from each stored array only the slices of this process's
  devices.

`from_scratch` mixes both: e.g. the UNet, VAE and CLIP from the checkpoint and a fresh
ControlNeXt module with the checkpoint's own config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from controlnext_jax.checkpoint.store import (
    SAFETENSORS_FILE,
    flatten,
    load_component,
    load_component_config,
    nest,
    stored_params,
)
from controlnext_jax.errors import UserError
from controlnext_jax.models.components import COMPONENTS, CountingKeys
from controlnext_jax.sharding.rules import DEFAULT_RULES, Rules, param_shardings

COMPONENT_NAMES = ("unet", "controlnext", "vae", "image_encoder")


def _check_names(names: Sequence[str], what: str) -> None:
    for name in names:
        if name not in COMPONENT_NAMES:
            raise UserError(f"{what}: unknown component {name!r}; allowed: {list(COMPONENT_NAMES)}")


def _parse_config(name: str, config):
    """A component config dataclass, or a plain mapping (a YAML section, configs/model/*.yaml) parsed."""
    if isinstance(config, Mapping):
        return COMPONENTS[name].config_from_dict(dict(config), source=f"model.{name}")
    return config


def _abstract(name: str, config, compute_dtype) -> nnx.Module:
    return COMPONENTS[name].build_abstract(config, param_dtype=jnp.float32, dtype=jnp.dtype(compute_dtype))


def _shardings(state, mesh, rules: Rules | None):
    return None if mesh is None else param_shardings(state, rules or DEFAULT_RULES, mesh)


def init_model(name: str, config, compute_dtype="bfloat16", *, seed: int = 0, mesh=None,
               rules: Rules | None = None) -> nnx.Module:
    """Component `name` with random parameters (its constructor's initialisers), placed by `rules` on `mesh`."""
    config = _parse_config(name, config)
    model_class = COMPONENTS[name].classes()[1]
    graphdef, abstract_state = nnx.split(_abstract(name, config, compute_dtype))

    def build():
        # a per-component stream: the same seed gives every component different weights
        keys = CountingKeys(seed)
        keys.key = jax.random.fold_in(keys.key, COMPONENT_NAMES.index(name))
        model = model_class(config, dtype=jnp.dtype(compute_dtype), param_dtype=jnp.float32, rngs=keys)
        return nnx.split(model)[1]

    if mesh is None:  # eagerly: compiling ~1400 initialisers as one program takes longer than running them
        return nnx.merge(graphdef, build())
    # one program whose outputs are the shards: no device ever holds a whole parameter; the
    # same values as the eager build (JAX's random bits do not depend on jit or sharding)
    state = jax.jit(build, out_shardings=_shardings(abstract_state, mesh, rules))()
    return nnx.merge(graphdef, state)


def init_training_models(configs: Mapping, compute_dtype: str = "bfloat16", *, seed: int = 0, mesh=None,
                         rules: Rules | None = None,
                         components: Sequence[str] = COMPONENT_NAMES) -> dict[str, nnx.Module]:
    """{name: model} with random parameters for `components`; `configs[name]`: a config dataclass or a
    mapping as in configs/model/{tiny,svd_xt}.yaml."""
    _check_names(components, "components")
    missing = [name for name in components if name not in configs]
    if missing:
        raise UserError(f"model: no config for component {missing[0]!r}; has {sorted(configs)}")
    return {name: init_model(name, configs[name], compute_dtype, seed=seed, mesh=mesh, rules=rules)
            for name in components}


def restore_sharded(ckpt: str | Path, name: str, config, compute_dtype, mesh, rules: Rules | None) -> nnx.Module:
    """Component `name` of a converted checkpoint restored onto `mesh`: each orbax part restored with
    targets that carry the parameters' shardings (and float32 dtype: stored half precision is cast)."""
    graphdef, state = nnx.split(_abstract(name, config, compute_dtype))
    shardings = dict(nnx.to_flat_state(_shardings(state, mesh, rules)))
    variables = dict(nnx.to_flat_state(state))
    by_key = {tuple(map(str, path)): path for path in variables}
    folder = Path(ckpt).absolute() / name
    if (folder / SAFETENSORS_FILE).is_file():  # a small model in one plain file: read whole, then placed
        stored = stored_params(ckpt, name, nnx.merge(graphdef, state))
        for path, var in variables.items():
            var.set_value(jax.device_put(jnp.asarray(stored[path], jnp.float32), shardings[path].get_value()))
        return nnx.merge(graphdef, state)
    names_file = folder / "parts.json"
    if not names_file.is_file():
        raise UserError(f"{names_file}: missing (incomplete checkpoint folder)")
    checkpointer = ocp.StandardCheckpointer()
    restored: dict[tuple, jax.Array] = {}
    for part in json.loads(names_file.read_text()):
        stored = dict(flatten(checkpointer.metadata(folder / part).item_metadata.tree))
        target = {}
        for key, meta in stored.items():
            path = by_key.get(key)
            if path is None:
                raise UserError(f"{folder}: stored array {'/'.join(key)} unknown to the model")
            shape = variables[path].get_value().shape
            if tuple(meta.shape) != tuple(shape):
                raise UserError(f"{folder}: parameter {'/'.join(key)} has shape {tuple(meta.shape)}, "
                                f"the model expects {tuple(shape)}")
            target[key] = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=shardings[path].get_value())
        for key, value in flatten(checkpointer.restore(folder / part, nest(target))):
            restored[by_key[key]] = value
    for path, var in variables.items():
        if path not in restored:
            raise UserError(f"{folder}: parameter {'/'.join(map(str, path))} missing from the checkpoint")
        var.set_value(restored[path])
    return nnx.merge(graphdef, state)


def load_training_models(ckpt, compute_dtype: str = "bfloat16", *, mesh=None, rules: Rules | None = None,
                         from_scratch: Sequence[str] = (), seed: int = 0,
                         components: Sequence[str] = COMPONENT_NAMES) -> dict[str, nnx.Module]:
    """The components of a converted checkpoint with float32 parameters, layers in `compute_dtype`;
    those in `from_scratch` randomly initialised (`seed`) from the checkpoint's config instead.
    With `mesh`, every parameter is restored or initialised straight onto it under `rules`."""
    _check_names(components, "components")
    _check_names(from_scratch, "from_scratch")
    models = {}
    for name in components:
        if name in from_scratch:
            models[name] = init_model(name, load_component_config(ckpt, name), compute_dtype, seed=seed, mesh=mesh,
                                      rules=rules)
        elif mesh is None:
            models[name] = load_component(ckpt, name, param_dtype=jnp.float32, dtype=jnp.dtype(compute_dtype))
        else:
            models[name] = restore_sharded(ckpt, name, load_component_config(ckpt, name), compute_dtype, mesh, rules)
    return models
