#!/usr/bin/env python3
"""How much a trained UNet relies on the pose (its loss with the right, a wrong and no pose):
`python eval/pose_use.py ckpt=... dataset=... out=...` (parameters: controlnext_jax/configs/pose_use.yaml).

The work is `controlnext_jax.metrics.pose_use.pose_use_report`.
"""

import sys

from controlnext_jax.cli import run_command


def _report(cfg, argv) -> None:
    from controlnext_jax.metrics.pose_use import PoseUseSettings, pose_use_report

    settings = PoseUseSettings(clips=cfg.clips, batch_size=cfg.batch_size, frames=cfg.frames,
                               interval_frame=cfg.interval_frame, height=cfg.height, width=cfg.width, seed=cfg.seed,
                               sigma_bands=tuple(cfg.sigma_bands))
    out = pose_use_report(cfg.ckpt, cfg.dataset, cfg.out, settings=settings, overwrite=cfg.overwrite,
                          command=" ".join(["python eval/pose_use.py", *argv]))
    print((out / "pose_use.md").read_text(), end="")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("pose_use.py", "pose_use", lambda cfg: _report(cfg, argv), argv)


if __name__ == "__main__":
    main()
