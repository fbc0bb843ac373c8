"""One policy for building a config dataclass (UNet, VAE, CLIP vision, ControlNeXt, scheduler)
from a dict: a diffusers/transformers config.json, a YAML model config or our pipeline.json.

- A key that is a field of the dataclass is checked against the field's annotation (a JSON
  list where a tuple is declared becomes a tuple, an int where a float is declared a float);
  a value of the wrong type is a `UserError` naming the source, the component and the key,
  instead of a traceback deep inside the model.
- A key starting with "_" is file metadata that diffusers and transformers write into every
  config (`_class_name`, `_diffusers_version`, `_name_or_path`, `_use_default_values`,
  `_commit_hash`, ...): ignored.
- A key listed in `IGNORED_KEYS` for the component is carried by the upstream config.json
  files but does not change what the model computes here: ignored, for the reason given there.
- Any other key is a `UserError` listing the allowed keys: a setting we do not implement
  must not be dropped silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from controlnext_jax.errors import UserError


def _because(reason: str, *keys: str) -> dict[str, str]:
    return {key: reason for key in keys}


# transformers' PretrainedConfig attributes, written by `save_pretrained` (current versions) and,
# by transformers 4.x, into every nested `vision_config` too (generation settings included)
_TRANSFORMERS_COMMON = _because(
    "a transformers PretrainedConfig attribute: outputs, generation, labels, tokenizer, storage dtype, "
    "bookkeeping; none changes the vision tower's image embedding",
    "architectures", "transformers_version", "dtype", "torch_dtype", "use_bfloat16", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "tf_legacy_loss", "pruned_heads",
    "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
    "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "id2label", "label2id",
    "problem_type", "finetuning_task", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id",
    "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "gradient_checkpointing")

# config class name -> {key: why it is ignored}
IGNORED_KEYS: dict[str, dict[str, str]] = {
    "UNetConfig": _because(
        "written by the ControlNeXt release's UNet class; its spatio-temporal blocks never read it",
        "upcast_attention"),
    "VAEConfig": {},
    "CLIPVisionConfig": {
        **_TRANSFORMERS_COMMON,
        **_because("dropout and weight initialisation: training only", "attention_dropout", "dropout",
                   "initializer_factor", "initializer_range"),
    },
    "ControlNeXtConfig": {},
    "SchedulerConfig": _because(
        "the training noise schedule and the discrete-timestep spacing: with explicit sigma_min / "
        "sigma_max, Karras sigmas, continuous timesteps and a zero final sigma, diffusers' schedule "
        "does not depend on them",
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "rescale_betas_zero_snr", "interpolation_type", "steps_offset")
    | _because("settings of other diffusers schedulers that SVD's scheduler_config.json carries and "
               "EulerDiscreteScheduler ignores", "clip_sample", "set_alpha_to_one", "skip_prk_steps"),
}


def config_from_dict(cls: type, d: Any, *, source: str | None = None):
    """`cls(**d)` under the policy above; `source` (a file, a config key) prefixes every error."""
    where = f"{source}: {cls.__name__}" if source else cls.__name__
    if not isinstance(d, Mapping):
        raise UserError(f"{where}: expected a mapping of config keys, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    ignored = IGNORED_KEYS.get(cls.__name__, {})
    unknown = sorted(k for k in d if k not in fields and not str(k).startswith("_") and k not in ignored)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            continue
        ok, converted = _convert(value, hints[key])
        if not ok:
            allowed = fields[key].metadata.get("allowed") or _describe(hints[key])
            raise UserError(f"{where}.{key}={value!r}: must be {allowed}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except UserError as e:  # a value the model does not support (checked by the class)
        if source is None:
            raise
        raise UserError(f"{source}: {e}") from None


def _convert(value: Any, tp: Any) -> tuple[bool, Any]:
    """(matches, value with lists turned into tuples and ints into floats where declared)."""
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, value
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return False, value
        items = [_convert(v, t) for v, t in zip(value, item_types)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"config_from_dict: unsupported field annotation {tp!r}")


def _describe(tp: Any) -> str:
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    return str(tp)


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, str(tp))
