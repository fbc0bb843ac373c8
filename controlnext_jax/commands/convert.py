"""controlnext-convert: PyTorch SVD + ControlNeXt checkpoints -> a controlnext-jax checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from controlnext_jax.cli import run_command


def convert(cfg: DictConfig) -> None:
    from controlnext_jax.checkpoint.convert import convert_checkpoint

    report = convert_checkpoint(cfg.svd, cfg.controlnext, cfg.out, unet=cfg.unet, dtype=cfg.dtype,
                                controlnext_config=OmegaConf.to_container(cfg.model.controlnext),
                                overwrite=cfg.overwrite)
    total = sum(r["num_params"] for r in report["components"].values())
    print(f"[convert] wrote {cfg.out} ({total / 1e9:.3f}e9 parameters, {cfg.dtype}); "
          f"report: {cfg.out}/conversion_report.md")


def main(argv=None) -> None:
    run_command("controlnext-convert", "convert", convert, argv)


if __name__ == "__main__":
    main()
