"""controlnext-synth: a synthetic data set of human-like figures in motion, for training and
evaluating a small demo model (docs/synthetic_data.md).

    controlnext-synth out=data/synth_train num_clips=512
    controlnext-synth out=data/synth_heldout split=heldout num_clips=64 seed=1
    controlnext-train ... data=pairs data.root=data/synth_train
    controlnext-synth out=data/synth_train_arrays video_format=npy   # frame arrays: training without ffmpeg
    controlnext-synth out=data/synth_eval split=heldout layout=eval num_clips=24 height=128 width=96 seed=1

`layout=eval` writes the test-set layout `controlnext-eval` reads instead
(controlnext_jax/synthetic/eval_set.py, docs/embedded_model_eval.md).
"""

from __future__ import annotations

from omegaconf import DictConfig

from controlnext_jax.cli import run_command
from controlnext_jax.errors import UserError, require_choice

LAYOUTS = ("pairs", "eval")


def synth(cfg: DictConfig) -> None:
    from controlnext_jax.synthetic.dataset import VIDEO_FORMATS, write_dataset
    from controlnext_jax.synthetic.eval_set import write_eval_set

    if cfg.overwrite not in (True, False):
        raise UserError(f"overwrite={cfg.overwrite!r}: must be true or false")
    require_choice("layout", cfg.layout, LAYOUTS)
    require_choice("video_format", cfg.video_format, VIDEO_FORMATS)
    if cfg.layout == "eval" and cfg.video_format != "mp4":
        raise UserError(f"video_format={cfg.video_format}: layout=eval writes mp4 videos (controlnext-eval reads "
                        f"videos); frame arrays are for layout=pairs")
    if cfg.layout == "eval":
        out = write_eval_set(cfg.out, split=cfg.split, num_clips=cfg.num_clips, frames=cfg.frames, height=cfg.height,
                             width=cfg.width, seed=cfg.seed, fps=cfg.fps, overwrite=cfg.overwrite, progress=True)
        print(f"[synth] wrote {cfg.num_clips} {cfg.split} clips as an evaluation set to {out}")
        return
    out = write_dataset(cfg.out, split=cfg.split, num_clips=cfg.num_clips, frames=cfg.frames, height=cfg.height,
                        width=cfg.width, seed=cfg.seed, fps=cfg.fps, video_format=cfg.video_format,
                        overwrite=cfg.overwrite, progress=True)
    print(f"[synth] wrote {cfg.num_clips} {cfg.split} clips to {out}")


def main(argv=None) -> None:
    run_command("controlnext-synth", "synth", synth, argv)


if __name__ == "__main__":
    main()
