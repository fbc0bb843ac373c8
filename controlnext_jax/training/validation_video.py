"""A validation video during training: the animate pipeline on the current weights.

The reference image and pose video are the user's (`validation.image`, `validation.pose_video`)
or, by default, frame 0 of the first training video and its pose video (videos or frame arrays).
Both are read once and brought to the training size as animate does (`prepare_reference`: cover, centre crop);
every `validation.every` steps the trained networks (or their EMA) are handed to
`ControlNeXtPipeline` as they are, without a copy to disk, and the result is written as <out>/validation/step_NNNNNNN.mp4 (pose | result side by side).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.pose.media import decode_frames, load_image, write_video
from controlnext_jax.pose.video import prepare_reference
from controlnext_jax.sampling.scheduler import SchedulerConfig
from controlnext_jax.training.frame_array import is_frame_array, open_frame_array


class ValidationVideo:
    def __init__(self, out: Path, *, image: str | None, pose_video: str | None, first_record, height: int,
                 width: int, frames: int, num_inference_steps: int, guidance_scale: float,
                 scheduler: dict | None, control_scale: float = 1.0):
        self.folder = Path(out) / "validation"
        video = pose_video or first_record.pose
        poses = list(itertools.islice(_frames(video, "validation.pose_video"), frames))
        self.poses = np.stack([prepare_reference(p, height, width) for p in poses])
        if image is not None:
            reference = load_image(image, "validation.image")
        else:
            reference = next(_frames(first_record.video, "validation.image"))
        self.image = prepare_reference(reference, height, width)
        self.params = dict(height=height, width=width, num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, batch_frames=len(self.poses), overlap=0,
                           decode_chunk_size=len(self.poses), seed=0, controlnext_cond_scale=control_scale)
        self.scheduler = SchedulerConfig.from_dict(scheduler) if scheduler else SchedulerConfig()
        self._pipeline = None

    def render(self, models: dict[str, nnx.Module], step: int) -> Path:
        from controlnext_jax.pipeline.pipeline import ControlNeXtPipeline

        graphdefs, params = {}, {}
        for name, module in models.items():
            graphdefs[name], params[name] = nnx.split(module)
        if self._pipeline is None:  # compiled once, then fed each validation's weights
            configs = {name: module.config for name, module in models.items()}
            self._pipeline = ControlNeXtPipeline(graphdefs, params, configs, self.scheduler,
                                                 devices=jax.local_devices()[:1])
        else:
            self._pipeline.set_params(params)
        frames = self._pipeline(self.image, self.poses, **self.params)
        path = self.folder / f"step_{step:07d}.mp4"
        self.folder.mkdir(parents=True, exist_ok=True)
        write_video(path, (np.concatenate([p, f], axis=1) for p, f in zip(self.poses, frames)), fps=7,
                    param="validation")
        return path


def _frames(path: str, param: str):
    """The frames of a video or of a frame array, in order."""
    if not is_frame_array(path):
        return decode_frames(path, param)
    try:
        return iter(np.asarray(open_frame_array(path)))
    except ValueError as e:
        raise UserError(f"{param}={path}: {e}") from None
