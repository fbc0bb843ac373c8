"""The two baselines a trained model must beat (docs/embedded_model_eval.md).

- **Reference repeated**: every frame of the "generated" video is the reference image, prepared
  for the model exactly as the animate pipeline prepares it (`pose.video.prepare_reference`:
  cover + centre crop), with the frame count, size and frame rate a generation of the same
  clip would have (the reference-pose frame, then one frame per driving frame used). It scores
  what a model gets for copying its input: on self-reenactment with a small moving figure the
  background alone already gives a high whole-frame PSNR, which the figure-region metrics expose.
- **Untrained**: the same architecture as a given converted checkpoint (its components'
  configs) with random weights (`training.models` initialisers), exported as a converted
  checkpoint (`training.export.export_inference`), so `controlnext-eval generate=true ckpt=...`
  runs it like the trained one: what the training itself contributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.errors import UserError, require_int
from controlnext_jax.metrics.dataset import discover
from controlnext_jax.pose.media import decode_frames, load_image, probe_video, write_video
from controlnext_jax.pose.video import prepare_reference

ALL_COMPONENTS = ("unet", "controlnext", "vae", "image_encoder")


def generated_frame_count(num_source: int, max_frame_num: int, sample_stride: int, offset: int = 0) -> int:
    """Frames of a generation from a driving video of `num_source` frames: the reference-pose frame,
    then driving frames offset, offset + stride, ... (at most max_frame_num frames in all)."""
    used = max(0, -(-(num_source - offset) // sample_stride))
    return 1 + min(max_frame_num - 1, used)


def _num_frames(path: Path) -> int:
    info = probe_video(path, "dataset.root")
    if info.num_frames is not None:
        return int(info.num_frames)
    frames = decode_frames(path, "dataset.root", info)
    try:
        return sum(1 for _ in frames)
    finally:
        frames.close()


def write_repeated_reference(dataset: str | Path, out: str | Path, *, height: int, width: int, max_frame_num: int,
                             sample_stride: int = 2, offset: int = 0, fps: float = 7.0, max_clips: int = 0,
                             overwrite: bool = False) -> Path:
    """`<out>/<clip_id>.mp4` for every clip of the eval-layout `dataset`: its prepared reference
    image repeated for as many frames as a generation would have; `out` serves as
    `controlnext-eval dataset.generated_dir=`. Returns the absolute folder."""
    height, width = require_int("height", height, 8, 4096), require_int("width", width, 8, 4096)
    max_frame_num = require_int("max_frame_num", max_frame_num, 2, 100_000)
    sample_stride, offset = require_int("sample_stride", sample_stride, 1), require_int("offset", offset, 0)
    clips = discover(dataset, max_clips=max_clips)
    out = check_output(out, inputs={"dataset": dataset}, overwrite=overwrite)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for clip in clips:
            count = generated_frame_count(_num_frames(clip.driving), max_frame_num, sample_stride, offset)
            if count < 2:
                raise UserError(f"dataset={dataset}: clip {clip.clip_id} has no driving frame from offset {offset} on")
            frame = prepare_reference(load_image(clip.reference, param="dataset"), height, width)
            write_video(tmp / f"{clip.clip_id}.mp4", [frame] * count, fps)
    return out


def write_untrained_checkpoint(like: str | Path, out: str | Path, *, seed: int = 0,
                               components: Sequence[str] = ALL_COMPONENTS, overwrite: bool = False) -> Path:
    """A converted checkpoint `out` with the architecture of the converted checkpoint `like` and
    random weights (seed `seed`) for `components` (the others keep `like`'s weights); scheduler
    and parameter dtype as `like`'s. Returns the absolute folder."""
    from controlnext_jax.checkpoint.store import checkpoint_digest, read_pipeline
    from controlnext_jax.training.export import export_inference
    from controlnext_jax.training.models import load_training_models

    seed = require_int("seed", seed, 0)
    unknown = [c for c in components if c not in ALL_COMPONENTS]
    if unknown or not components:
        raise UserError(f"untrained_components={list(components)}: choose among {', '.join(ALL_COMPONENTS)}")
    meta = read_pipeline(like)
    out = check_output(out, inputs={"ckpt": like}, overwrite=overwrite)
    models = load_training_models(like, "float32", from_scratch=list(components), seed=seed)
    record = {"baseline": "untrained", "random_components": list(components), "seed": seed,
              "architecture_of": str(Path(like).absolute()), "architecture_digest": checkpoint_digest(like)}
    return export_inference(out, models, base_ckpt=like, dtype=meta.get("param_dtype", "float32"), record=record,
                            overwrite=overwrite, log=lambda *_: None)


__all__ = ["ALL_COMPONENTS", "generated_frame_count", "write_repeated_reference", "write_untrained_checkpoint"]
