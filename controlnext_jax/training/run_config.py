"""The train command's config, checked and turned into the library's settings, before any heavy work.

`check_run(cfg)` raises a one-line UserError for anything wrong that can be seen without
loading a model: choices and ranges, the checkpoint's pipeline.json, the data listing,
the validation inputs and the run folder. The other functions translate the Hydra config
(controlnext_jax/configs/train.yaml) into `TrainConfig`, `DataConfig` and friends.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from controlnext_jax.checkpoint.store import STORAGES
from controlnext_jax.endpoint import PARAMETERS
from controlnext_jax.errors import UserError, require_choice, require_int, require_number
from controlnext_jax.models.unet_blocks import REMAT_CHOICES
from controlnext_jax.pipeline.validation import validate_params
from controlnext_jax.training.data import DataConfig, check_data
from controlnext_jax.training.init import INITS
from controlnext_jax.training.models import COMPONENT_NAMES
from controlnext_jax.training.optimizer import OptimizerConfig
from controlnext_jax.training.sigmas import SIGMA_SAMPLERS
from controlnext_jax.training.step import OBJECTIVES, TrainConfig
from controlnext_jax.training.trainable import MODULE_ONLY, RELEASE_UNET_PATTERNS

# a model trained at control_scale s is animated at controlnext_cond_scale s: the same range
CONTROL_SCALE_RANGE = (PARAMETERS["controlnext_cond_scale"].low, PARAMETERS["controlnext_cond_scale"].high)

TRAINABLE = ("release", "module", "patterns")
COMPUTE_DTYPES = ("bfloat16", "float32")
WANDB_MODES = ("auto", "online", "offline", "disabled")
EXPORT_DTYPES = ("float32", "bfloat16")


def plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def unet_patterns(cfg: DictConfig) -> tuple[str, ...]:
    require_choice("trainable", cfg.trainable, TRAINABLE)
    if cfg.trainable == "release":
        return RELEASE_UNET_PATTERNS
    if cfg.trainable == "module":
        return MODULE_ONLY
    patterns = plain(cfg.unet_patterns)
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise UserError(f"unet_patterns={patterns!r}: trainable=patterns needs a non-empty list of globs, "
                        "e.g. ['*attentions*to_v*']")
    return tuple(patterns)


def vae_patterns(cfg: DictConfig) -> tuple[str, ...]:
    patterns = plain(cfg.vae_patterns)
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise UserError(f"vae_patterns={patterns!r}: a non-empty list of globs over dotted VAE parameter paths, "
                        "e.g. ['*'] (the whole VAE) or ['decoder.*'] (the decoder alone)")
    return tuple(patterns)


def optimizer_config(cfg: DictConfig) -> OptimizerConfig:
    values = plain(cfg.optimizer)
    allowed = {f.name for f in fields(OptimizerConfig)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"optimizer.{unknown[0]}: unknown; allowed: {sorted(allowed)}")
    try:
        return OptimizerConfig(**values)
    except (TypeError, ValueError) as e:
        raise UserError(f"optimizer: {e}") from None


def train_config(cfg: DictConfig) -> TrainConfig:
    require_choice("compute_dtype", cfg.compute_dtype, COMPUTE_DTYPES)
    require_choice("sigma_sampler", cfg.sigma_sampler, tuple(SIGMA_SAMPLERS))
    require_number("conditioning_dropout", cfg.conditioning_dropout, 0.0, 1.0 / 3.0)
    require_number("control_scale", cfg.control_scale, *CONTROL_SCALE_RANGE)
    if cfg.ema_decay is not None:
        require_number("ema_decay", cfg.ema_decay, 0.0, 1.0)
    require_choice("objective", cfg.objective, OBJECTIVES)
    if not isinstance(cfg.train_image_encoder, bool):
        raise UserError(f"train_image_encoder={cfg.train_image_encoder!r}: allowed values are true, false")
    require_number("kl_weight", cfg.kl_weight, 0.0, None)
    vae_crop = plain(cfg.vae_crop)
    if vae_crop is not None:
        height, width = cfg.data.get("height"), cfg.data.get("width")
        if (not isinstance(vae_crop, list) or len(vae_crop) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 8 == 0 for v in vae_crop)
                or (isinstance(height, int) and vae_crop[0] > height) or (isinstance(width, int) and vae_crop[1] > width)):
            raise UserError(f"vae_crop={vae_crop!r}: null or [height, width], multiples of 8 within data.height x "
                            f"data.width ({height}x{width})")
        vae_crop = tuple(vae_crop)
    return TrainConfig(optimizer=optimizer_config(cfg), unet_patterns=unet_patterns(cfg),
                       compute_dtype=cfg.compute_dtype, sigma_sampler=SIGMA_SAMPLERS[cfg.sigma_sampler](),
                       dropout_prob=float(cfg.conditioning_dropout), control_scale=float(cfg.control_scale),
                       ema_decay=None if cfg.ema_decay is None else float(cfg.ema_decay),
                       objective=cfg.objective, train_image_encoder=bool(cfg.train_image_encoder),
                       kl_weight=float(cfg.kl_weight), vae_crop=vae_crop, vae_patterns=vae_patterns(cfg))


def data_config(cfg: DictConfig, *, process_index: int = 0, process_count: int = 1) -> DataConfig:
    """This process's loader: its share of the global batch, its own stream (seed + process index)."""
    values = plain(cfg.data)
    allowed = {f.name for f in fields(DataConfig)} - {"seed"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"data.{unknown[0]}: unknown; allowed: {sorted(allowed)}")
    batch = values.get("batch_size", 1)
    require_int("data.batch_size", batch, 1, None)
    if batch % process_count:
        raise UserError(f"data.batch_size={batch}: must be a multiple of the {process_count} processes")
    values["batch_size"] = batch // process_count
    return DataConfig(**values, seed=int(cfg.seed) + process_index)


def check_run(cfg: DictConfig) -> dict:
    """Every cheap check, in the order a user fixes them; returns {"records": [...]} of the data."""
    require_int("steps", cfg.steps, 1, None)
    if cfg.get("time_limit_s") is not None:
        require_number("time_limit_s", cfg.time_limit_s, 0.0, None)
    require_int("seed", cfg.seed, 0, None)
    require_choice("remat", cfg.remat, REMAT_CHOICES)
    require_choice("init", cfg.init, INITS)
    train_config(cfg)
    require_int("checkpoint.every", cfg.checkpoint.every, 1, None)
    require_int("checkpoint.keep", cfg.checkpoint.keep, 1, None)
    require_int("log.every", cfg.log.every, 1, None)
    require_choice("log.wandb", cfg.log.wandb, WANDB_MODES)
    require_int("validation.every", cfg.validation.every, 0, None)
    if cfg.objective == "vae" and cfg.validation.every:
        raise UserError(f"validation.every={cfg.validation.every}: objective=vae trains the VAE alone and has no "
                        "validation video; set validation.every=0")
    require_int("validation.frames", cfg.validation.frames, 1, None)
    require_int("validation.num_inference_steps", cfg.validation.num_inference_steps, 1, 100)
    require_choice("export.dtype", cfg.export.dtype, EXPORT_DTYPES)
    require_choice("export.storage", cfg.export.storage, STORAGES)
    defaults = plain(cfg.export.inference_defaults) or {}
    if not isinstance(defaults, dict):
        raise UserError(f"export.inference_defaults={defaults!r}: a mapping of animate parameters, e.g. "
                        "{height: 128, width: 96}")
    try:
        validate_params(**defaults)
    except UserError as e:
        raise UserError(f"export.inference_defaults.{e}") from None
    from_scratch = plain(cfg.from_scratch) or []
    if not isinstance(from_scratch, list) or any(name not in COMPONENT_NAMES for name in from_scratch):
        raise UserError(f"from_scratch={from_scratch!r}: a list of components among {list(COMPONENT_NAMES)}")
    if cfg.ckpt is None:
        missing = [name for name in COMPONENT_NAMES if name not in from_scratch]
        if missing:
            raise UserError(f"ckpt=null: every component comes from scratch then; add {missing} to from_scratch "
                            "(their architecture is model=...)")
    else:
        from controlnext_jax.checkpoint.store import read_pipeline

        read_pipeline(cfg.ckpt)  # a UserError naming the folder when it is not a converted checkpoint
    try:
        records = check_data(data_config(cfg))
    except UserError as e:  # the loader names its own fields; on the command line they are data.<field>
        message = str(e)
        field = message.split("=", 1)[0]
        raise UserError(f"data.{message}" if field in {f.name for f in fields(DataConfig)} else message) from None
    for key in ("image", "pose_video"):
        path = cfg.validation[key]
        if path is not None and not Path(path).is_file():
            raise UserError(f"validation.{key}={path}: no such file")
    return {"records": records}


def inference_defaults(cfg: DictConfig) -> dict:
    """The animate parameters the export records (pipeline.json): `export.inference_defaults`, plus
    `controlnext_cond_scale` = `control_scale` for a model trained at another control weight than
    the release's, unless the user set it there."""
    defaults = dict(plain(cfg.export.inference_defaults) or {})
    if cfg.objective == "diffusion" and float(cfg.control_scale) != 1.0:
        defaults.setdefault("controlnext_cond_scale", float(cfg.control_scale))
    return defaults


def input_paths(cfg: DictConfig) -> dict[str, str | None]:
    """What the run reads: the run folder may not be, contain or lie inside any of them."""
    return {"ckpt": cfg.ckpt, "data.root": cfg.data.get("root"), "data.meta_info": cfg.data.get("meta_info"),
            "validation.image": cfg.validation.image, "validation.pose_video": cfg.validation.pose_video}
