"""controlnext-convert: PyTorch SVD + ControlNeXt checkpoints -> a controlnext-jax checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from controlnext_jax.checkpoint.convert import convert_checkpoint
from controlnext_jax.cli import CONFIG_DIR, user_errors


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="convert")
@user_errors("controlnext-convert")
def run(cfg: DictConfig) -> None:
    report = convert_checkpoint(cfg.svd, cfg.controlnext, cfg.out, unet=cfg.unet, dtype=cfg.dtype,
                                controlnext_config=OmegaConf.to_container(cfg.model.controlnext),
                                overwrite=cfg.overwrite)
    total = sum(r["num_params"] for r in report["components"].values())
    print(f"[convert] wrote {cfg.out} ({total / 1e9:.3f}e9 parameters, {cfg.dtype}); "
          f"report: {cfg.out}/conversion_report.md")


def main() -> None:
    run()


if __name__ == "__main__":
    main()
