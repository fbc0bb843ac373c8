#!/usr/bin/env python3
"""A trained checkpoint against the untrained architecture and the repeated reference image:
`python eval/compare_baselines.py ckpt=... dataset=... out=...` (parameters:
controlnext_jax/configs/compare_baselines.yaml; protocol: docs/embedded_model_eval.md).

The work is `controlnext_jax.metrics.comparison.compare_baselines`.
"""

import sys

from controlnext_jax.cli import run_command


def _compare(cfg, argv) -> None:
    from omegaconf import OmegaConf

    from controlnext_jax.metrics.comparison import GenerationSettings, compare_baselines

    out = compare_baselines(
        cfg.ckpt, cfg.dataset, cfg.out, settings=GenerationSettings(**OmegaConf.to_container(cfg.generation)),
        untrained_seed=cfg.untrained.seed, untrained_components=list(cfg.untrained.components), fvd=cfg.fvd,
        pose=cfg.pose_metrics, max_clips=cfg.max_clips, eval_overrides=list(cfg.eval_overrides),
        command=" ".join(["python eval/compare_baselines.py", *argv]), overwrite=cfg.overwrite, progress=cfg.progress,
        sheet_clips=cfg.sheet.clips, sheet_frames=cfg.sheet.frames)
    print(f"comparison written to {out}/comparison.md")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("compare_baselines.py", "compare_baselines", lambda cfg: _compare(cfg, argv), argv)


if __name__ == "__main__":
    main()
