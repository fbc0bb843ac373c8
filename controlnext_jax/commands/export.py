"""controlnext-export: a controlnext-jax checkpoint -> diffusers safetensors + ControlNeXt state dict."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from controlnext_jax.checkpoint.export import export_checkpoint
from controlnext_jax.cli import CONFIG_DIR, user_errors


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="export")
@user_errors("controlnext-export")
def run(cfg: DictConfig) -> None:
    export_checkpoint(cfg.ckpt, cfg.out, dtype=cfg.dtype, overwrite=cfg.overwrite)
    print(f"[export] wrote {cfg.out}")


def main() -> None:
    run()


if __name__ == "__main__":
    main()
