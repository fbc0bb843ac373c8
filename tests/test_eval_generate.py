"""controlnext-eval generate=true: the clips' videos made by the animate pipeline, then evaluated.

One clip of real footage (scikit-image's astronaut moving across the frame, so the pose
detector finds a person in the reference and in every driving frame) and a tiny
random-weight checkpoint: the videos are noise, but every step of the job runs for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import imageio.v2 as iio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from skimage import data as skimage_data

from controlnext_jax.cli import CONFIG_DIR
from controlnext_jax.errors import UserError
from controlnext_jax.metrics import evaluation
from controlnext_jax.pose.media import read_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen_dataset")
    clip = root / "dance_a"
    clip.mkdir()
    astro = skimage_data.astronaut()
    frames = [cv2.warpAffine(astro, np.float32([[0.9, 0, 6 * t], [0, 0.9, 10]]), (256, 256),
                             borderValue=(40, 40, 40)) for t in range(8)]
    iio.mimwrite(clip / "driving.mp4", frames, fps=10, macro_block_size=1)
    iio.mimwrite(clip / "ground_truth.mp4", frames, fps=10, macro_block_size=1)
    iio.imwrite(clip / "reference.jpg", astro[:, 64:448])
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return Path(build_random_release(tmp_path_factory.mktemp("gen_ckpt"), model_configs("tiny"), seed=4)[1])


def _cfg(root: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=[
            f"dataset.root={root}", f"out={out}", "progress=false", "generate=true", "seed=9",
            f"generation.height={SIZE}", f"generation.width={SIZE}", "generation.num_inference_steps=2",
            "generation.max_frame_num=4", "alignment.sample_stride=2", "sampling.batch_frames=3",
            "sampling.overlap=1", "fvd.enabled=false", *overrides])


def test_generation_parameters_are_checked_first(dataset, ckpt, tmp_path):
    for override, message in [("generation.height=60", "height=60"), ("generation.width=100", "multiples of 8"),
                              ("generation.dtype=int8", "generation.dtype='int8'"),
                              ("sampling.overlap=3", "overlap=3"),
                              ("alignment.leading_reference_frame=false", "leading_reference_frame"),
                              ("generation.controlnext_cond_scale=20", "controlnext_cond_scale=20")]:
        with pytest.raises(UserError, match=message):
            evaluation.run(_cfg(dataset, tmp_path / "r", f"ckpt={ckpt}", override))
    assert list(tmp_path.iterdir()) == []


def test_the_control_weight_is_the_checkpoints_unless_given(dataset, ckpt, tmp_path):
    """generation.controlnext_cond_scale=null: the weight a model trained with control_scale was
    exported with (pipeline.json's inference_defaults), as controlnext-animate runs it."""
    from controlnext_jax.metrics.generation import animate_kwargs

    trained = tmp_path / "trained_at_4"
    shutil.copytree(ckpt, trained)
    meta = json.loads((trained / "pipeline.json").read_text())
    meta["inference_defaults"] = {"controlnext_cond_scale": 4.0}
    (trained / "pipeline.json").write_text(json.dumps(meta))
    weight = {}
    for name, where, extra in [("release", ckpt, []), ("trained", trained, []),
                               ("given", trained, ["generation.controlnext_cond_scale=2.0"])]:
        weight[name] = animate_kwargs(_cfg(dataset, tmp_path / "r", f"ckpt={where}", *extra))["controlnext_cond_scale"]
    assert weight == {"release": 1.0, "trained": 4.0, "given": 2.0}


@pytest.mark.slow
def test_generate_then_evaluate(dataset, ckpt, tmp_path):
    out = tmp_path / "report"
    cfg = _cfg(dataset, out, f"ckpt={ckpt}", f"generation.compilation_cache={tmp_path / 'cache'}")
    assert evaluation.run(cfg, command="test") == out
    video = read_video(out / "generated" / "dance_a.mp4")
    assert video.shape == (4, SIZE, SIZE, 3)  # the reference pose frame + 3 driving frames
    report = json.loads((out / "report.json").read_text())
    generation = report["details"]["generation"]["dance_a"]
    assert generation["seed"] == 9 and generation["frames"] == 4
    assert generation["controlnext_cond_scale"] == 1.0  # null: the checkpoint's, which has none
    assert report["header"]["checkpoint"].startswith(str(ckpt.resolve()))
    assert report["details"]["clips"]["dance_a"]["aligned"] == 3
    assert "psnr" in report["results"]["frames"] and "seam_ratio" in json.dumps(report["results"])
    # nothing left beside the report: the generated videos moved into it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "report"]
