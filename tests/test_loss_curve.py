"""The loss-curve PNG of training runs (controlnext_jax/training/loss_curve.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from controlnext_jax.errors import UserError
from controlnext_jax.training.loss_curve import moving_average, plot_loss_curves, read_losses


def _run(folder, rows):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_a_resumed_runs_repeated_steps_keep_their_last_record(tmp_path):
    run = _run(tmp_path / "run", [{"step": 1, "compile_s": 3.0, "loss": 0.9}, {"step": 2, "loss": 0.8},
                                  {"step": 2, "checkpoint": "x"}, {"step": 3, "loss": 0.7},
                                  {"step": 2, "loss": 0.75}, {"step": 3, "loss": 0.65, "l1": 0.5},
                                  {"step": 4, "compile_s": 2.0, "loss": 2.5}, {"step": 5, "loss": 0.6}])
    steps, losses = read_losses(run)
    # the compile records (steps 1 and 4: one step's loss each, not a mean over log.every) are left out
    np.testing.assert_array_equal(steps, [2, 3, 5])
    np.testing.assert_allclose(losses, [0.75, 0.65, 0.6])
    assert read_losses(run, "l1")[1].tolist() == [0.5]
    with pytest.raises(UserError, match="no 'kl' records"):
        read_losses(run, "kl")
    only = _run(tmp_path / "short", [{"step": 1, "compile_s": 3.0, "loss": 0.9}])
    assert read_losses(only)[1].tolist() == [0.9]  # a run with nothing else keeps it


def test_moving_average_is_centred():
    values = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(moving_average(values, 3), [2.0, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(moving_average(values, 2), [2.0, 4.0, 6.0, 7.0])
    np.testing.assert_allclose(moving_average(values, 1), values)


def test_one_panel_per_run(tmp_path):
    rng = np.random.default_rng(0)
    a = _run(tmp_path / "a", [{"step": s, "loss": float(v)} for s, v in enumerate(rng.uniform(0.1, 1, 30), 1)])
    b = _run(tmp_path / "b", [{"step": s, "l1": float(v)} for s, v in enumerate(rng.uniform(0.1, 1, 30), 1)])
    out = plot_loss_curves([("diffusion", a, "loss"), ("vae", b, "l1")], tmp_path / "curve.png")
    image = Image.open(out)
    assert image.width > 2 * image.height and image.info["Title"] == "training loss"
