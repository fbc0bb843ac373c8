"""Synthetic clips in the test-set layout that `controlnext-eval` reads (docs/embedded_model_eval.md).

Self-reenactment, the convention of the TikTok benchmark: each clip's own frame 0 is the
reference image, its frames are both the driving video and the ground truth. On the held-out
split the people and the `jump` motion never appear in training (docs/synthetic_data.md).

    <out>/<clip>/reference.png           frame 0 of the clip, lossless
    <out>/<clip>/driving.mp4             the clip
    <out>/<clip>/ground_truth.mp4        the clip (the same file contents)
    <out>/<clip>/figure_mask.npz         `masks` (T, H, W) bool: the figure in every frame
    <out>/<clip>/ground_truth_poses.npz  the renderer's poses, one row per clip frame
    <out>/dataset.json                   the parameters and every clip's identity, motion and seed

`ground_truth_poses.npz` (`controlnext_jax.metrics.dataset.read_ground_truth_poses`) holds
`keypoints` (T, 18, 2) as x / width, y / height of the clip's frames, `scores` (T, 18) (1 visible,
0 not), `reference_keypoints` / `reference_scores` (the reference image's pose) and `size`
(height, width). It is written per clip frame rather than as `driving_poses.npz` (one row per
*generated* frame, in the generated frame's geometry): which frames a generation uses depends
on the evaluation's sample_stride, offset, frame count and size, which are not properties of
the data set; the evaluation selects and maps the rows itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.metrics.dataset import FIGURE_MASK, GROUND_TRUTH_POSES
from controlnext_jax.pose.media import write_video
from controlnext_jax.synthetic.dataset import DEFAULT_FPS, SPLITS, _check_size, clip_plan, make_clip


def write_eval_set(out: str | Path, *, num_clips: int, frames: int, height: int, width: int, seed: int,
                   fps: float = DEFAULT_FPS, split: str = "heldout", overwrite: bool = False,
                   progress: bool = False) -> Path:
    """Render `num_clips` clips of `split` as an evaluation set in the folder `out` (all or
    nothing); returns its absolute path. The clips are those `write_dataset` would render with
    the same split, seed and sizes."""
    frames, height, width, fps = _check_size(frames, height, width, fps)
    plan = clip_plan(split, num_clips, seed)
    overwrite = bool(overwrite)
    out = check_output(out, inputs={}, overwrite=overwrite)
    size = np.array([height, width], np.int64)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for k, entry in enumerate(plan):
            clip = make_clip(entry["identity"], entry["motion"], entry["seed"], frames, height, width, fps)
            folder = tmp / entry["name"]
            folder.mkdir()
            Image.fromarray(clip.frames[0]).save(folder / "reference.png")
            write_video(folder / "driving.mp4", clip.frames, fps)
            # the same encoded bytes: ground truth and driving frames are identical after decoding
            shutil.copyfile(folder / "driving.mp4", folder / "ground_truth.mp4")
            np.savez_compressed(folder / FIGURE_MASK, masks=clip.masks)
            keypoints = clip.keypoints / np.array([width, height], np.float64)
            scores = clip.visible.astype(np.float32)
            np.savez_compressed(folder / GROUND_TRUTH_POSES, keypoints=keypoints, scores=scores,
                                reference_keypoints=keypoints[0], reference_scores=scores[0], size=size)
            if progress:
                print(f"[synth] {k + 1}/{len(plan)} {entry['name']}", flush=True)
        manifest = {"layout": "eval", "split": split, "seed": seed, "num_clips": len(plan), "frames": frames,
                    "height": height, "width": width, "fps": fps,
                    "identities": [SPLITS[split].identities.start, SPLITS[split].identities.stop],
                    "motions": list(SPLITS[split].motions), "reference": "frame 0 of the clip (self-reenactment)",
                    "clips": plan}
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return out


__all__ = ["FIGURE_MASK", "GROUND_TRUTH_POSES", "write_eval_set"]
