"""controlnext-pose: the aligned pose video of a driving video, for inspection.

    controlnext-pose video=dance.mp4 image=ref.png out=pose.mp4

Detects the poses (max_frame_num and sample_stride applied before detection),
aligns them to the reference person and draws them exactly as the model sees them,
at the model's (height, width); frame 0 is the reference's own pose. Writes the video
and the keypoints (JSON). The animate command calls the same code
(`controlnext_jax.pose.video.extract_pose_sequence`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from controlnext_jax.pose.video import extract_pose_sequence, load_image, write_json, write_video


def run(cfg: DictConfig) -> tuple[str, str]:
    out = to_absolute_path(cfg.out)
    keypoints_out = (to_absolute_path(cfg.keypoints_out) if cfg.keypoints_out
                     else os.path.splitext(out)[0] + ".json")
    if not out.lower().endswith((".mp4", ".mov", ".mkv")):
        raise ValueError(f"out must name an .mp4, .mov or .mkv file, got {cfg.out!r}")
    image = load_image(to_absolute_path(cfg.image))
    video = to_absolute_path(cfg.video)
    if not os.path.isfile(video):
        raise FileNotFoundError(f"video: file not found: {cfg.video!r}")
    detector = instantiate(cfg.pose)
    try:
        seq = extract_pose_sequence(
            detector, image, video, height=cfg.height, width=cfg.width,
            max_frame_num=cfg.max_frame_num, sample_stride=cfg.sample_stride, align=cfg.align,
            progress=cfg.progress)
    finally:
        if hasattr(detector, "close"):
            detector.close()
    write_video(out, seq.render(), seq.fps)
    write_json(keypoints_out, seq.to_json())
    return out, keypoints_out


# An absolute path: Hydra resolves a relative one against the *package* when the module is
# imported by a console script, and configs/ (beside the package) is not a package.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="pose_preview", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        out, keypoints_out = run(cfg)
    except (ValueError, FileNotFoundError, InstantiationException, MissingMandatoryValue) as e:
        if isinstance(e, MissingMandatoryValue):
            message = f"{e.full_key}=... is required (see configs/pose_preview.yaml, configs/pose/)"
        elif isinstance(e, InstantiationException) and e.__cause__ is not None:
            message = str(e.__cause__)  # the detector's own error, without Hydra's wrapping
        else:
            message = str(e)
        # One clear line and status 2 (the project's convention for bad input).
        print(f"controlnext-pose: error: {message}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out} and {keypoints_out}")


if __name__ == "__main__":
    main()
