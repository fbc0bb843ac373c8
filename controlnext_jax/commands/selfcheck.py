"""controlnext-selfcheck: convert random-weight PyTorch checkpoints and prove the port computes the same.

The main job until the animate command exists: it exercises the whole path a user's
checkpoint takes (diffusers `save_pretrained` folder + ControlNeXt `.bin` + partial
`unet.bin` -> conversion -> checkpoint loading -> forward passes) and prints each
component's relative error against PyTorch and both run times.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.checkpoint.convert import convert_checkpoint
from controlnext_jax.checkpoint.store import load_component
from controlnext_jax.cli import run_command
from controlnext_jax.testing.parity_cases import CASES, rel_err
from controlnext_jax.testing.torch_checkpoints import (
    torch_models,
    with_scheduler,
    write_controlnext_file,
    write_svd_folder,
    write_unet_override,
)


def selfcheck(configs: dict, workdir: Path, *, seed: int, tolerance: float) -> bool:
    t0 = time.perf_counter()
    models = torch_models(configs, seed=seed)
    write_svd_folder(workdir / "svd", models, configs)
    write_controlnext_file(workdir / "controlnet.bin", models["controlnext"])
    _, override = write_unet_override(workdir / "unet.bin", models["unet"])
    models["unet"].load_state_dict(override, strict=False)  # what the original does with unet.bin
    print(f"[selfcheck] wrote random-weight PyTorch checkpoints to {workdir} ({time.perf_counter() - t0:.1f}s)")
    convert_checkpoint(workdir / "svd", workdir / "controlnet.bin", workdir / "converted", unet=workdir / "unet.bin",
                       controlnext_config=configs["controlnext"], overwrite=True)
    print("\n| component | output shape | rel. error vs PyTorch | JAX time (s, incl. compile) | verdict |")
    print("|---|---|---:|---:|---|")
    ok = True
    g = torch.Generator().manual_seed(seed)
    loaded = {}
    for case, (component, run_case) in CASES.items():
        if component not in loaded:
            loaded[component] = load_component(workdir / "converted", component)
        start = time.perf_counter()
        ours, ref = run_case(loaded[component], models[component], g)
        elapsed = time.perf_counter() - start
        err = rel_err(ours, ref)
        ok &= err <= tolerance
        print(f"| {case} | {tuple(ours.shape)} | {err:.2e} | {elapsed:.2f} | {'ok' if err <= tolerance else 'FAIL'} |")
    return ok


def run(cfg: DictConfig) -> None:
    configs = with_scheduler(OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.out:  # keep the checkpoints: written whole or not at all, like every output
        out = check_output(cfg.out, inputs={}, overwrite=cfg.overwrite)
        with atomic_folder(out, overwrite=cfg.overwrite) as tmp:
            ok = selfcheck(configs, tmp, seed=cfg.seed, tolerance=cfg.tolerance)
    else:
        with tempfile.TemporaryDirectory(prefix="controlnext-selfcheck-") as tmp:
            ok = selfcheck(configs, Path(tmp), seed=cfg.seed, tolerance=cfg.tolerance)
    print(f"\n[selfcheck] {'all components match PyTorch' if ok else 'MISMATCH: see the table above'} "
          f"(tolerance {cfg.tolerance:g})")
    if not ok:
        sys.exit(1)


def main(argv=None) -> None:
    run_command("controlnext-selfcheck", "selfcheck", run, argv)


if __name__ == "__main__":
    main()
