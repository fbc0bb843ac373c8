"""The shipped embedded model (controlnext_jax/embedded): the README's first command's code path
on it, and the video it writes.

`controlnext-animate example=true out=...` runs here exactly as the README gives it (no ckpt=,
the checkpoint's own settings, a fresh compilation cache), so CI animates the bundled held-out
example with the real trained weights. The rules the command follows on any such checkpoint are
checked quickly on a tiny stand-in in tests/test_embedded_defaults.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlnext_jax import embedded
from controlnext_jax.checkpoint.store import PIPELINE_FILE, SAFETENSORS_FILE, read_pipeline
from controlnext_jax.commands import animate
from controlnext_jax.metrics.frame_metrics import psnr_masked
from controlnext_jax.pose.media import probe_video, read_video

# Figure PSNR on the example of the same VAE with its UNet and module untrained (stage 1's
# export): 12.30 dB. The reference image repeated scores 15.14 dB there, and the shipped model
# does not beat that yet (MODEL_CARD.md); what this guards is that the shipped weights are the
# trained ones, by a margin float32 differences between machines cannot eat.
UNTRAINED_FIGURE_DB = 12.30


def test_the_embedded_model_is_plain_files_within_the_budget():
    assert embedded.stored_bytes() <= embedded.MAX_BYTES
    meta = read_pipeline(embedded.checkpoint())
    assert sorted(meta["components"]) == ["controlnext", "image_encoder", "unet", "vae"]
    stored = {p.relative_to(embedded.CHECKPOINT_DIR).as_posix() for p in embedded.CHECKPOINT_DIR.rglob("*")
              if p.is_file()}
    # nothing that loading could execute: the settings as JSON, the weights as safetensors
    assert stored == {PIPELINE_FILE, *(f"{name}/{SAFETENSORS_FILE}" for name in meta["components"])}
    assert meta["inference_defaults"]["height"] == 128 and meta["inference_defaults"]["width"] == 96


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The README's first command, `controlnext-animate example=true out=example.mp4`."""
    tmp = tmp_path_factory.mktemp("example")
    out = tmp / "example.mp4"
    # progress=false only keeps pytest's captured output short; the cache is empty, so this
    # run compiles everything, as a first run on a new machine does
    animate.main(["example=true", f"out={out}", "progress=false", f"compilation_cache={tmp / 'cache'}"])
    return out


def test_the_first_command_writes_the_video_and_its_side_by_side(example_run):
    poses = read_video(embedded.EXAMPLE["pose_video"])
    video = read_video(example_run)
    assert video.shape == (len(poses), 128, 96, 3)
    assert probe_video(example_run).fps == 7
    side = example_run.with_name("example.side_by_side.mp4")
    assert read_video(side).shape == (len(poses), 128, 192, 3)
    sidecar = json.loads(example_run.with_name("example.json").read_text())
    assert sidecar["parameters"]["ckpt"] == str(embedded.CHECKPOINT_DIR)
    # not constant: the frames change over time, and each frame has structure
    assert np.abs(np.diff(video.astype(np.float32), axis=0)).mean() > 1.0
    assert min(frame.std() for frame in video) > 10.0


def test_the_generated_figure_is_closer_to_the_clip_than_an_untrained_models(example_run):
    """Over the figure (the renderer's masks), the generated frames against the held-out clip."""
    video = read_video(example_run)
    clip = read_video(embedded.EXAMPLE["video"])
    masks = np.load(embedded.EXAMPLE["masks"])["masks"]
    stride = 2  # poses.mp4 holds every second pose frame of the clip (controlnext_jax/embedded)
    truth, figure = clip[::stride][:len(video)], masks[::stride][:len(video)]
    # frame 0 is the reference pose itself: only the moved frames count
    generated_db = np.nanmean(psnr_masked(video[1:], truth[1:], figure[1:]))
    assert generated_db > UNTRAINED_FIGURE_DB + 1.0, generated_db
