"""controlnext-export: a controlnext-jax checkpoint -> diffusers safetensors + ControlNeXt state dict."""

from __future__ import annotations

from omegaconf import DictConfig

from controlnext_jax.cli import run_command


def export(cfg: DictConfig) -> None:
    from controlnext_jax.checkpoint.export import export_checkpoint

    export_checkpoint(cfg.ckpt, cfg.out, dtype=cfg.dtype, overwrite=cfg.overwrite)
    print(f"[export] wrote {cfg.out}")


def main(argv=None) -> None:
    run_command("controlnext-export", "export", export, argv)


if __name__ == "__main__":
    main()
