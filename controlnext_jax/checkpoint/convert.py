"""PyTorch ControlNeXt-SVD checkpoints -> a controlnext-jax checkpoint folder.

Inputs are the base model in the diffusers folder layout (`unet/`, `vae/`,
`image_encoder/`, `scheduler/`, `feature_extractor/`), the ControlNeXt release's
`controlnet.bin` and optionally its `unet.bin`, a UNet state dict applied over the base
UNet key by key as the original's `load_state_dict(strict=False)` does: a key present
there replaces the base value, a key absent keeps it.

Strictness (beyond the original): every source key is consumed or is in the
component's deliberately-ignored list, every target parameter is assigned, shapes
match. The output folder appears only when everything succeeded (written beside it
under a temporary name, then renamed), and tensors are converted one at a time into
orbax parts of about 1 GiB, so peak memory stays a few GiB whatever the model size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from controlnext_jax.atomic_io import atomic_folder, check_output, sha256_file
from controlnext_jax.checkpoint.store import FORMAT, PIPELINE_FILE, save_params
from controlnext_jax.checkpoint.torch_files import CheckpointError, StateDictFile, find_weight_file
from controlnext_jax.checkpoint.torch_layout import ParamSlot, param_table, to_flax_layout
from controlnext_jax.errors import require_choice
from controlnext_jax.models.components import COMPONENTS

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ComponentReport:
    name: str
    files: dict[str, str]  # role -> path
    num_params: int = 0
    num_keys: int = 0
    overridden: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # torch key -> role of the file it came from
    ignored: list[str] = field(default_factory=list)
    source_dtypes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan_component(name: str, config, sources: list[tuple[str, StateDictFile]], dtype: str,
                   report: ComponentReport) -> list[tuple[str, ParamSlot, StateDictFile]]:
    """Check that torch-layout state dicts fit component `name` (later sources override earlier
    ones) using only the files' metadata; returns (key, target slot, file to read it from)."""
    component = COMPONENTS[name]
    table = param_table(component.build_abstract(config, param_dtype=jnp.dtype(dtype)))
    owner: dict[str, StateDictFile] = {}
    roles: dict[str, str] = {}
    for role, sd in sources:
        unknown = [k for k in sd if k not in table and k not in component.ignored_keys]
        if unknown:
            raise CheckpointError(f"{sd.path}: {len(unknown)} key(s) unknown to the {name} model "
                                  f"({type(config).__name__}), first: {unknown[:5]}")
        for key in sd:
            if key not in table:
                if key not in report.ignored:
                    report.ignored.append(key)
                continue
            if key in owner and role == "override":
                report.overridden.append(key)
            owner[key], roles[key] = sd, role
    missing = [k for k in table if k not in owner]
    if missing:
        files = ", ".join(str(sd.path) for _, sd in sources)
        raise CheckpointError(f"{files}: {len(missing)} {name} parameter(s) missing, first: {missing[:5]}")
    for key, slot in table.items():
        shape = owner[key].shape(key)
        if shape != slot.torch_shape:
            raise CheckpointError(f"{owner[key].path}: key {key!r} has shape {shape}, the {name} model "
                                  f"expects {slot.torch_shape}")
    report.num_keys = len(table)
    report.sources = {key: roles[key] for key in table}
    report.num_params = sum(int(np.prod(slot.shape)) for slot in table.values())
    return [(key, slot, owner[key]) for key, slot in table.items()]


def converted_arrays(plan, dtype: str, report: ComponentReport) -> Iterator[tuple[tuple, np.ndarray]]:
    """Read, transpose and cast one tensor at a time (NNX path, array)."""
    for key, slot, sd in plan:
        array = np.asarray(sd[key])
        report.source_dtypes[str(array.dtype)] = report.source_dtypes.get(str(array.dtype), 0) + 1
        yield slot.path, to_flax_layout(array, slot.layout).astype(jnp.dtype(dtype), copy=False)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e


def convert_checkpoint(svd: str | os.PathLike, controlnext: str | os.PathLike, out: str | os.PathLike, *,
                       unet: str | os.PathLike | None = None, dtype: str = "float32",
                       controlnext_config: dict, overwrite: bool = False, log=print) -> dict:
    """Convert and write `out`; returns the conversion report (also written to `out`)."""
    require_choice("dtype", dtype, DTYPES)
    # before any slow work: the output may not touch an input and must be writable
    out = check_output(out, inputs={"svd": svd, "controlnext": controlnext, "unet": unet}, overwrite=overwrite)
    svd = Path(svd)
    if not svd.is_dir():
        raise CheckpointError(f"svd={svd}: base model folder not found")
    controlnext = Path(controlnext)

    # Validate every input before writing anything.
    config_sources = {name: svd / name / "config.json" for name in ("unet", "vae", "image_encoder")}
    configs = {name: _read_json(path) for name, path in config_sources.items()}
    configs["controlnext"] = dict(controlnext_config)
    config_sources["controlnext"] = "model.controlnext"  # no config.json in the release: ours
    parsed = {name: COMPONENTS[name].config_from_dict(cfg, source=str(config_sources[name]))
              for name, cfg in configs.items()}
    scheduler_path = svd / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_path)
    from controlnext_jax.sampling.scheduler import SchedulerConfig

    SchedulerConfig.from_dict(scheduler, source=str(scheduler_path))
    feature_extractor_path = svd / "feature_extractor" / "preprocessor_config.json"
    feature_extractor = _read_json(feature_extractor_path) if feature_extractor_path.exists() else None
    sources = {
        "unet": [("base", StateDictFile(find_weight_file(svd / "unet")))]
        + ([("override", StateDictFile(unet))] if unet else []),
        "vae": [("base", StateDictFile(find_weight_file(svd / "vae")))],
        "image_encoder": [("base", StateDictFile(find_weight_file(svd / "image_encoder")))],
        "controlnext": [("base", StateDictFile(controlnext))],
    }

    # every component is checked (metadata only) before anything is written
    order = ("controlnext", "vae", "image_encoder", "unet")
    reports, plans = {}, {}
    for name in order:
        reports[name] = ComponentReport(name, {role: str(sd.path) for role, sd in sources[name]})
        plans[name] = plan_component(name, parsed[name], sources[name], dtype, reports[name])

    with atomic_folder(out, overwrite=overwrite) as tmp:
        for name in order:
            start = time.perf_counter()
            report = reports[name]
            # a bar on a terminal only (tqdm's disable=None): logs and tests keep the one-line summaries
            arrays = tqdm(converted_arrays(plans[name], dtype, report), total=len(plans[name]), unit="tensor",
                          desc=f"[convert] {name}", leave=False, disable=None)
            save_params(tmp / name, arrays)
            log(f"[convert] {name}: {report.num_keys} tensors, {report.num_params / 1e6:.1f}M parameters, "
                f"{len(report.overridden)} overridden, {len(report.ignored)} ignored "
                f"({time.perf_counter() - start:.1f}s)")
        digests = {path: sha256_file(Path(path)) for r in reports.values() for path in r.files.values()}
        meta = {"format": FORMAT, "param_dtype": dtype,
                "components": {name: parsed[name].to_dict() for name in configs},
                "source_configs": configs,
                "scheduler": scheduler, "feature_extractor": feature_extractor}
        (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2))
        full_report = {"param_dtype": dtype, "source_sha256": digests,
                       "components": {n: r.to_dict() for n, r in reports.items()}}
        (tmp / "conversion_report.json").write_text(json.dumps(full_report, indent=2))
        (tmp / "conversion_report.md").write_text(render_report(full_report))
    return full_report


def render_report(report: dict) -> str:
    lines = ["# Conversion report", "", f"Parameter dtype: `{report['param_dtype']}`", "",
             "| component | tensors | parameters | overridden | ignored | source dtypes | files |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, r in report["components"].items():
        files = "<br>".join(f"{role}: `{p}`" for role, p in r["files"].items())
        dtypes = ", ".join(f"{k}: {v}" for k, v in r["source_dtypes"].items())
        lines.append(f"| {name} | {r['num_keys']} | {r['num_params']:,} | {len(r['overridden'])} | "
                     f"{len(r['ignored'])} | {dtypes} | {files} |")
    lines += ["", "Every target parameter was assigned from the file named per role: a key present in the "
              "`override` file replaces the `base` value (the original's `load_state_dict(strict=False)`).", ""]
    for name, r in report["components"].items():
        if r["ignored"]:
            lines.append(f"- {name}: deliberately ignored keys (not parameters): {', '.join(r['ignored'])}")
        if r["overridden"]:
            lines.append(f"- {name}: {len(r['overridden'])} overridden keys, e.g. {', '.join(r['overridden'][:5])}")
    lines += ["", "## Source files (sha256)", ""]
    lines += [f"- `{p}`: `{d}`" for p, d in report["source_sha256"].items()]
    return "\n".join(lines) + "\n"
