"""controlnext-train: fine-tune ControlNeXt-SVD (or train it from scratch) from a Hydra command line.

    controlnext-train ckpt=/ckpt/controlnext-jax data.meta_info=/data/meta_info.json out=runs/a
    controlnext-train ckpt=/ckpt/controlnext-jax data=pairs data.root=/data/pairs out=runs/a resume=true

The work is controlnext_jax.training.run; the config is controlnext_jax/configs/train.yaml.
"""

from __future__ import annotations

from omegaconf import DictConfig

from controlnext_jax.cli import run_command


def train(cfg: DictConfig) -> None:
    from controlnext_jax.training.run import train as run

    out = run(cfg)
    print(f"[train] run folder {out}")


def main(argv=None) -> None:
    run_command("controlnext-train", "train", train, argv)


if __name__ == "__main__":
    main()
