"""controlnext-pose: the aligned pose video of a driving video, for inspection.

    controlnext-pose video=dance.mp4 image=ref.png out=pose.mp4

Detects the poses (max_frame_num and sample_stride applied before detection),
aligns them to the reference person and draws them exactly as the model sees them,
at the model's (height, width); frame 0 is the reference's own pose. Writes the video
and the keypoints (JSON). The animate command calls the same code
(`controlnext_jax.pose.video.extract_pose_sequence`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from controlnext_jax.atomic_io import check_output
from controlnext_jax.cli import run_command
from controlnext_jax.errors import UserError, require_choice
from controlnext_jax.pose.video import (
    ALIGN_MODES,
    check_int,
    extract_pose_sequence,
    load_image,
    probe_video,
    write_json,
    write_video,
)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


def run(cfg: DictConfig) -> tuple[Path, Path]:
    require_choice("align", cfg.align, ALIGN_MODES)
    for name in ("height", "width", "max_frame_num", "sample_stride"):
        check_int(name, cfg[name])
    inputs = {"video": cfg.video, "image": cfg.image,
              **{f"pose.{k}": v for k, v in cfg.pose.items() if k.endswith("_model") and v}}
    if not str(cfg.out).lower().endswith(VIDEO_SUFFIXES):
        raise UserError(f"out={cfg.out}: must name a {', '.join(VIDEO_SUFFIXES)} file")
    out = check_output(cfg.out, inputs=inputs, overwrite=cfg.overwrite, kind="file")
    keypoints_out = check_output(cfg.keypoints_out or out.with_suffix(".json"), inputs=inputs,
                                 overwrite=cfg.overwrite, param="keypoints_out", kind="file")
    if keypoints_out == out:
        raise UserError(f"keypoints_out={keypoints_out}: must differ from out")
    image = load_image(cfg.image, param="image")
    video = Path(cfg.video)
    probe_video(video, param="video")  # an unreadable video fails before the detector loads
    detector = instantiate_detector(cfg.pose)
    try:
        seq = extract_pose_sequence(
            detector, image, str(video), height=cfg.height, width=cfg.width,
            max_frame_num=cfg.max_frame_num, sample_stride=cfg.sample_stride, align=cfg.align,
            progress=cfg.progress)
    finally:
        if hasattr(detector, "close"):
            detector.close()
    write_video(out, seq.render(), seq.fps, param="out")
    try:
        write_json(keypoints_out, seq.to_json(), param="keypoints_out")
    except BaseException:
        out.unlink(missing_ok=True)  # both outputs or neither
        raise
    return out, keypoints_out


def instantiate_detector(pose_cfg: DictConfig):
    """The configured pose detector; its own constructor errors (a missing model file) are
    user errors, reported without Hydra's wrapping."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(pose_cfg)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise UserError(str(cause)) from None
        raise


def _main(cfg: DictConfig) -> None:
    out, keypoints_out = run(cfg)
    print(f"wrote {out} and {keypoints_out}")


def main(argv=None) -> None:
    run_command("controlnext-pose", "pose_preview", _main, argv)


if __name__ == "__main__":
    main()
