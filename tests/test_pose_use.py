"""eval/pose_use.py: the training loss with the right, a wrong and no pose, the reference copied,
and its contract.

The three losses are recomputed here from `diffusion_loss` on the loader's own batch with the
draws written out (dropout off, the "other" poses picked by index rather than rolled), on a
tiny random release; the summary against hand-made numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controlnext_jax.checkpoint.store import trained_control_weight
from controlnext_jax.metrics.pose_use import PoseUseSettings, per_clip_losses, summarise
from controlnext_jax.pose.media import write_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release
from controlnext_jax.training.data import TrainingDataLoader
from controlnext_jax.training.data_sources import DataConfig
from controlnext_jax.training.draws import draw
from controlnext_jax.training.loss import Models, diffusion_loss
from controlnext_jax.training.models import load_training_models

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
SIZE, LENGTH, CLIPS = 64, 12, 3


def _video(rng, pose: bool) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.uniform(0, 60, 3) if pose else rng.uniform(40, 200, 3)
    frames = []
    for t in range(LENGTH):
        f = np.broadcast_to(base + 30 * (yy + xx)[..., None], (SIZE, SIZE, 3)).copy()
        f[10:50, 8 + 3 * t:14 + 3 * t] = (240, 200, 40) if pose else rng.uniform(0, 255, 3)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("pose_use")
    ckpt = Path(build_random_release(base / "release", model_configs("tiny"), seed=5)[1])
    data = base / "data"
    rng = np.random.default_rng(0)
    for sub in ("videos", "poses"):
        (data / sub).mkdir(parents=True)
    for k in range(CLIPS):
        write_video(data / "videos" / f"c{k}.mp4", _video(rng, False), fps=8)
        write_video(data / "poses" / f"c{k}.mp4", _video(rng, True), fps=8)
    return {"ckpt": ckpt, "data": data}


def _with_control_scale(ckpt: Path, folder: Path, scale: float) -> Path:
    """A copy of `ckpt` whose pipeline.json says it runs at controlnext_cond_scale=`scale` (as the
    export of a run trained with control_scale=`scale` does)."""
    shutil.copytree(ckpt, folder)
    meta = json.loads((folder / "pipeline.json").read_text())
    meta["inference_defaults"] = {**(meta.get("inference_defaults") or {}), "controlnext_cond_scale": scale}
    (folder / "pipeline.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.slow  # ~1 min on 2 cores per case: a tiny release built, three losses compiled
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_the_three_losses_are_the_training_loss_with_the_poses_swapped(setup, tmp_path, scale):
    s = PoseUseSettings(clips=3, batch_size=3, frames=3, interval_frame=2, height=SIZE, width=SIZE, seed=4)
    ckpt = setup["ckpt"] if scale == 1.0 else _with_control_scale(setup["ckpt"], tmp_path / "ckpt", scale)
    assert trained_control_weight(ckpt) == scale
    got = per_clip_losses(ckpt, setup["data"], s)
    assert {k: v.shape for k, v in got.items()} == {k: (3,) for k in ("sigma", "own", "other", "blank", "copied")}

    # by hand: the same clips, draws from the documented key, dropout r = 1, poses indexed
    cfg = DataConfig(format="pairs", root=str(setup["data"]), height=SIZE, width=SIZE, sample_n_frames=3,
                     interval_frame=2, batch_size=3, workers=0, seed=4)
    with TrainingDataLoader(cfg) as loader:
        batch = next(loader)
    m = load_training_models(setup["ckpt"], "float32")
    models = Models(m["unet"], m["controlnext"], m["vae"], m["image_encoder"])
    d = draw(jax.random.fold_in(jax.random.key(4), 0), batch=3, frames=3, height=SIZE, width=SIZE,
             latent_hw=(SIZE // 8, SIZE // 8), latent_channels=m["vae"].config.latent_channels)
    d = d._replace(dropout_r=jnp.ones(3))
    np.testing.assert_allclose(got["sigma"], np.asarray(d.sigma), rtol=1e-6)
    poses = batch["poses"]
    for name, p in {"own": poses, "other": poses[[2, 0, 1]], "blank": np.zeros_like(poses)}.items():
        _, aux = diffusion_loss(models, {"frames": jnp.asarray(batch["frames"]), "poses": jnp.asarray(p)}, d,
                                scaling_factor=float(m["vae"].config.scaling_factor), dtype=jnp.float32,
                                control_scale=scale)
        # float32 in another operation order (jit against eager): rounding only
        np.testing.assert_allclose(got[name], np.asarray(aux["per_video"]), rtol=1e-4, err_msg=name)
    # a random ControlNeXt still moves the UNet: the rows differ well beyond rounding
    assert np.all(np.abs(got["blank"] / got["own"] - 1) > 1e-3)

    # copied: every frame's clean estimate is the reference's VAE mean (after the 0.02 noise the
    # UNet's reference gets) times the scaling factor; targets are posterior draws, as training's
    frames, sf = jnp.asarray(batch["frames"]), float(m["vae"].config.scaling_factor)
    ref, _ = m["vae"].encode(frames[:, 0] + 0.02 * d.image_noise)
    mean, logvar = m["vae"].encode(frames.reshape(-1, SIZE, SIZE, 3))
    targets = (mean + jnp.exp(0.5 * logvar) * d.latent_eps.reshape(mean.shape)).reshape(d.latent_eps.shape) * sf
    weight = (1 + d.sigma**2) / d.sigma**2
    want = weight * jnp.mean(jnp.square(ref[:, None] * sf - targets), axis=(1, 2, 3, 4))
    np.testing.assert_allclose(got["copied"], np.asarray(want), rtol=1e-4)


def test_summary_bands_and_relative_increases():
    losses = {"sigma": np.array([0.1, 0.2, 1.0, 5.0]), "own": np.array([1.0, 3.0, 2.0, 1.0]),
              "other": np.array([1.0, 3.0, 3.0, 2.0]), "blank": np.array([2.0, 2.0, 2.0, 1.5]),
              "copied": np.array([4.0, 4.0, 1.0, 0.5])}
    rows = summarise(losses, (0.3, 2.0))
    assert [(r["band"], r["clips"]) for r in rows] == [("all", 4), ("sigma 0-0.3", 2), ("sigma 0.3-2", 1),
                                                       ("sigma >= 2", 1)]
    assert rows[0]["own"] == pytest.approx(1.75) and rows[0]["other_vs_own"] == pytest.approx(9 / 7 - 1)
    assert rows[1]["blank_vs_own"] == pytest.approx(0.0)
    assert rows[3]["other_vs_own"] == pytest.approx(1.0) and rows[3]["blank_vs_own"] == pytest.approx(0.5)
    assert rows[0]["own_vs_copied"] == pytest.approx(1.75 / 2.375 - 1) and rows[3]["own_vs_copied"] == pytest.approx(1.0)
    assert len(summarise(losses, (10.0, 20.0))) == 2  # empty bands are left out
    assert "own_vs_copied" not in summarise({k: v for k, v in losses.items() if k != "copied"})[0]


def _run(capsys) -> tuple[int, str, str]:
    import runpy

    try:
        runpy.run_path(str(EVAL_DIR / "pose_use.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # shares the tiny release; compiles the three losses at 64x64
def test_command_writes_the_report_or_nothing(setup, tmp_path, monkeypatch, capsys):
    common = [f"ckpt={setup['ckpt']}", f"dataset={setup['data']}", "height=64", "width=64", "frames=3", "batch_size=2"]
    bad = tmp_path / "bad"
    monkeypatch.setattr("sys.argv", ["pose_use.py", *common, "clips=3", f"out={bad}"])
    code, _, err = _run(capsys)
    assert code == 2 and err.strip().splitlines() == ["pose_use.py: error: clips=3: must be a multiple of batch_size=2"]
    assert not bad.exists() and not list(tmp_path.iterdir())

    out = tmp_path / "report"
    monkeypatch.setattr("sys.argv", ["pose_use.py", *common, "clips=2", f"out={out}"])
    code, printed, _ = _run(capsys)
    assert code == 0
    report = json.loads((out / "pose_use.json").read_text())
    assert [r["band"] for r in report["summary"]][0] == "all" and len(report["clips"]["own"]) == 2
    assert printed == (out / "pose_use.md").read_text() and "| all | 2 |" in printed
    assert "| own vs copied |" in printed and len(report["clips"]["copied"]) == 2
