"""controlnext-train end to end on the tiny model: bad input, and a run that is killed and resumed.

The long test runs the command in subprocesses, as a user would: an uninterrupted run, then
the same run SIGKILLed after a checkpoint, resumed, stopped with SIGTERM, and resumed to the
end. Its losses must equal the uninterrupted run's exactly: the same programs on the same
machine, the same restored state, data position and per-step keys. The runs share JAX's
persistent compilation cache, so only the first compiles the step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from controlnext_jax.commands.train import main
from controlnext_jax.pose.media import read_video, write_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

SIZE = 64  # training frames 64x64: latents 8x8 for the tiny VAE


def _write_pairs(root: Path, count: int = 2, length: int = 12) -> Path:
    """videos/<k>.mp4 with moving random blobs and poses/<k>.mp4 with a matching skeleton-like mark."""
    rng = np.random.default_rng(0)
    for sub in ("videos", "poses"):
        (root / sub).mkdir(parents=True)
    for k in range(count):
        frames, poses = [], []
        background = rng.integers(0, 255, (1, 1, 3))
        for i in range(length):
            frame = np.broadcast_to(background, (80, 96, 3)).astype(np.uint8).copy()
            pose = np.zeros((80, 96, 3), np.uint8)
            x = 10 + 5 * i + 7 * k
            frame[20:60, x:x + 20] = rng.integers(0, 255, 3)
            pose[30:50, x + 8:x + 12] = (255, 0, 85)
            frames.append(frame)
            poses.append(pose)
        write_video(root / "videos" / f"clip{k}.mp4", frames, fps=8)
        write_video(root / "poses" / f"clip{k}.mp4", poses, fps=8)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    ckpt = build_random_release(base / "release", model_configs("tiny"))[1]
    return {"ckpt": Path(ckpt), "data": _write_pairs(base / "pairs"), "base": base}


def _args(inputs, out, **extra) -> list[str]:
    args = {"ckpt": inputs["ckpt"], "data": "pairs", "data.root": inputs["data"], "data.height": SIZE,
            "data.width": SIZE, "data.sample_n_frames": 3, "data.interval_frame": 2, "data.workers": 0,
            "out": out, "compute_dtype": "float32", "remat": "none", "log.every": 1, "log.progress": "false",
            "log.wandb": "disabled", "export.at_end": "false", "optimizer.learning_rate": 1e-4, **extra}
    return [f"{k}={v}" for k, v in args.items()]


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, message", [
    ({"trainable": "all"}, "trainable='all': allowed values are release, module, patterns"),
    ({"remat": "some"}, "remat='some'"),
    ({"steps": 0}, "steps=0"),
    ({"from_scratch": "[decoder]"}, "from_scratch="),
    ({"data.root": "/nonexistent/data"}, "/nonexistent/data"),
    ({"data.height": 60}, "data.height=60: must be a multiple of 8"),
    ({"optimizer.schedule": "cosine"}, "total_steps"),
    ({"optimizer.betas": 1}, "unknown parameter 'optimizer.betas'"),
    ({"log.wandb": "cloud"}, "log.wandb='cloud'"),
    ({"validation.pose_video": "/nonexistent/pose.mp4"}, "validation.pose_video"),
    ({"resume": "true"}, "holds no run to resume"),
    ({"time_limit_s": -1}, "time_limit_s=-1: must be a number >= 0.0"),
    ({"control_scale": 0}, "control_scale=0: must be a number in 0.1..10.0"),
])
def test_bad_input_is_one_line_and_status_2(inputs, tmp_path, capsys, change, message):
    with pytest.raises(SystemExit) as e:
        main(_args(inputs, tmp_path / "run", **change))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("controlnext-train: error:") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_the_checkpoint_and_the_run_folder_are_checked(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(_args(inputs, tmp_path / "run", ckpt=inputs["data"]))
    assert e.value.code == 2 and "not a converted controlnext-jax checkpoint" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as e:
        main(_args(inputs, tmp_path / "run"))
    assert e.value.code == 2 and "overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the run folder may not hold the data it reads
        main(_args(inputs, inputs["data"] / "run"))
    assert e.value.code == 2 and "data.root" in capsys.readouterr().err


@pytest.mark.parametrize("objective, control_scale, given, recorded", [
    ("diffusion", 1.0, {"height": 128}, {"height": 128}),  # the release's weight: nothing to record
    ("diffusion", 4.0, {"height": 128}, {"height": 128, "controlnext_cond_scale": 4.0}),
    ("diffusion", 4.0, {"controlnext_cond_scale": 2.0}, {"controlnext_cond_scale": 2.0}),  # the user's wins
    ("vae", 4.0, {}, {}),  # the VAE stage trains no control
])
def test_the_export_records_the_control_scale_a_model_was_trained_at(objective, control_scale, given, recorded):
    from omegaconf import OmegaConf

    from controlnext_jax.training.run_config import inference_defaults

    cfg = OmegaConf.create({"objective": objective, "control_scale": control_scale,
                            "export": {"inference_defaults": given}})
    assert inference_defaults(cfg) == recorded


# ------------------------------------------------------------------------------- kill and resume


def _launch(inputs, out, cache, **extra) -> subprocess.Popen:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "controlnext_jax.commands.train", *_args(inputs, out, **extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 1500) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()  # never leave a run behind (a no-op once it has ended)
    return proc.returncode, out, err


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 1500) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _losses(out: Path) -> dict[int, float]:
    """The last loss recorded for every step (a resumed run re-records the steps after its checkpoint)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _committed(out: Path, step: int) -> bool:
    return (out / "checkpoints" / str(step) / "commit_success.txt").exists()


@pytest.mark.slow  # ~3 min on 2 cores: one compile of the tiny step (then cached), a validation video, 5 runs
def test_killed_and_resumed_run_reproduces_the_uninterrupted_losses(inputs, tmp_path):
    cache, steps = tmp_path / "jax_cache", 8
    common = {"steps": steps, "checkpoint.every": 2, "checkpoint.keep": 2}

    # the uninterrupted run, with the validation video, offline wandb and the export at the end
    whole = tmp_path / "whole"
    code, _, err = _finish(_launch(inputs, whole, cache, **common, **{
        "validation.every": steps, "validation.frames": 3, "validation.num_inference_steps": 2,
        "log.wandb": "offline", "export.at_end": "true"}))
    assert code == 0, err
    reference = _losses(whole)
    assert sorted(reference) == list(range(1, steps + 1))
    assert sorted(int(p.name) for p in (whole / "checkpoints").iterdir()) == [steps - 2, steps]  # keep=2
    video = read_video(whole / "validation" / f"step_{steps:07d}.mp4")
    assert video.shape == (3, SIZE, 2 * SIZE, 3) and video.std() > 1  # pose | result, not constant
    assert list((whole / "wandb").glob("offline-run-*"))
    import controlnext_jax

    pipe = controlnext_jax.load_pipeline(whole / "model", compilation_cache_dir=None)
    assert set(pipe.configs) == {"unet", "vae", "image_encoder", "controlnext"}

    # the same run, SIGKILLed once its step-2 checkpoint is committed
    run = tmp_path / "run"
    proc = _launch(inputs, run, cache, **common)
    _wait_for(lambda: _committed(run, 2), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # resumed, then stopped with SIGTERM after a few more steps: it saves the step it reached
    proc = _launch(inputs, run, cache, **common, resume="true")
    _wait_for(lambda: max(_losses(run), default=0) >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = _finish(proc)
    assert code == 143, err
    assert "resume=true continues" in err.strip().splitlines()[-1], err
    stopped_at = int(err.split("stopped at step ")[1].split()[0].rstrip(";"))
    assert 5 <= stopped_at < steps and _committed(run, stopped_at), err

    # resumed to the end
    code, out, err = _finish(_launch(inputs, run, cache, **common, resume="true"))
    assert code == 0, err
    assert f"resumed from step {stopped_at}" in out
    resumed = _losses(run)
    assert sorted(resumed) == list(range(1, steps + 1))
    assert [resumed[s] for s in sorted(resumed)] == [reference[s] for s in sorted(reference)]

    # a time limit already spent: one step more, then the checkpoint and the exit as at `steps`
    code, out, err = _finish(_launch(inputs, run, cache, **{**common, "steps": steps + 100}, resume="true",
                                     time_limit_s=0))
    assert code == 0, err
    assert f"time_limit_s=0 reached after step {steps + 1}" in out + err
    assert max(_losses(run)) == steps + 1 and _committed(run, steps + 1)
