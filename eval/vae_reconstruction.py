#!/usr/bin/env python3
"""A checkpoint's VAE on held-out clips, beside what a VAE must beat:
`python eval/vae_reconstruction.py ckpt=... videos=... out=...` (parameters:
controlnext_jax/configs/vae_reconstruction.yaml).

The work is `controlnext_jax.metrics.vae_reconstruction.vae_reconstruction_report`.
"""

import sys

from controlnext_jax.cli import run_command


def _report(cfg, argv) -> None:
    from controlnext_jax.metrics.vae_reconstruction import ReconstructionSettings, vae_reconstruction_report

    settings = ReconstructionSettings(frames=cfg.frames, start=cfg.start, stride=cfg.stride,
                                      height=cfg.height, width=cfg.width,
                                      max_clips=cfg.max_clips, sheet_clips=cfg.sheet_clips,
                                      sheet_frames=cfg.sheet_frames)
    out = vae_reconstruction_report(cfg.ckpt, cfg.videos, cfg.out, settings=settings, overwrite=cfg.overwrite,
                                    command=" ".join(["python eval/vae_reconstruction.py", *argv]))
    print(f"report written to {out}/vae_reconstruction.md")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("vae_reconstruction.py", "vae_reconstruction", lambda cfg: _report(cfg, argv), argv)


if __name__ == "__main__":
    main()
