"""eval/vae_reconstruction.py: the VAE round trip, its baselines and its command-line contract.

The round trip is recomputed here from the VAE module's own encode/decode and diffusers'
post-processing written out by hand; the baselines against hand-made frames and torch's
avg_pool2d + bilinear interpolate (the usual reference for "area down, bilinear up").
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from controlnext_jax.checkpoint.store import load_component
from controlnext_jax.metrics.frame_metrics import psnr, psnr_masked
from controlnext_jax.metrics.vae_reconstruction import (
    ReconstructionSettings,
    contact_sheet,
    downsampled_baseline,
    mean_colour_baseline,
    mean_colour_error,
    read_clip,
    vae_reconstruction_report,
)
from controlnext_jax.pose.media import write_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

EVAL_DIR = Path(__file__).resolve().parents[1] / "eval"
HEIGHT, WIDTH, FRAMES = 32, 24, 6


def _clip(rng: np.random.Generator) -> list[np.ndarray]:
    # smooth colour fields (a codec keeps them nearly intact) with a moving bright bar
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / max(HEIGHT, WIDTH)
    base = rng.uniform(40, 200, 3) + rng.uniform(-40, 40, 3) * (yy[..., None] + xx[..., None])
    frames = []
    for t in range(FRAMES):
        f = base.copy()
        f[8:24, 4 + 2 * t:8 + 2 * t] = 240
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("vae_recon")
    ckpt = Path(build_random_release(base / "release", model_configs("tiny"), seed=3)[1])
    videos = base / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b_clip", "a_clip"):
        write_video(videos / f"{name}.mp4", _clip(rng), fps=8)
    (videos / "notes.txt").write_text("not a clip")
    return {"ckpt": ckpt, "videos": videos}


def _hand_round_trip(vae, frames: np.ndarray) -> tuple[jnp.ndarray, np.ndarray]:
    """(posterior mean, uint8 reconstruction) of the frames decoded in one temporal chunk, with
    diffusers' post-processing written out."""
    mean = vae.encode(jnp.asarray(frames, jnp.float32) / 127.5 - 1)[0]
    decoded = np.asarray(vae.decode(mean, len(frames)), np.float64)
    return mean, np.round(np.clip(decoded / 2 + 0.5, 0, 1) * 255).astype(np.uint8)


def test_report_matches_a_hand_written_round_trip(setup, tmp_path):
    settings = ReconstructionSettings(frames=4, start=1, sheet_clips=1, sheet_frames=3)
    out = vae_reconstruction_report(setup["ckpt"], setup["videos"], tmp_path / "report", settings=settings,
                                    command="python eval/vae_reconstruction.py ...")
    result = json.loads((out / "vae_reconstruction.json").read_text())
    assert [c["clip"] for c in result["clips"]] == ["a_clip", "b_clip"]  # sorted; notes.txt ignored

    vae = load_component(setup["ckpt"], "vae", param_dtype=jnp.float32)
    sf = float(vae.config.scaling_factor)
    sq, n = 0.0, 0
    for entry in result["clips"]:
        frames = read_clip(setup["videos"] / f"{entry['clip']}.mp4", settings, 8)
        assert frames.shape == (4, HEIGHT, WIDTH, 3)
        mean, recon = _hand_round_trip(vae, frames)  # the 4 frames in one temporal chunk
        # the jitted program and this eager call round the same float32 values: a pixel may land
        # on the other side of a .5 boundary, so PSNR agrees to a small tolerance, not exactly
        assert entry["vae"]["psnr"] == pytest.approx(float(np.mean(psnr(recon, frames))), abs=0.05)
        assert entry["vae"]["mean_colour_error"] == pytest.approx(
            float(np.mean(mean_colour_error(recon, frames))), abs=2e-3)
        sq += float(np.sum(np.square(np.asarray(mean, np.float64) * sf)))
        n += mean.size
    assert result["scaled_latent_rms"] == pytest.approx(np.sqrt(sq / n), rel=1e-4)
    assert result["mean"]["vae"]["psnr"] == pytest.approx(np.mean([c["vae"]["psnr"] for c in result["clips"]]))
    md = (out / "vae_reconstruction.md").read_text()
    assert "baseline: 8x area-downsampled" in md and "a_clip" in md
    import imageio.v3 as iio

    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.shape == (2 * HEIGHT + 2, 3 * WIDTH + 4, 3)


def test_mean_colour_baseline_and_error_by_hand():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[0, :2] = (200, 100, 0)
    frames[1] = (10, 20, 30)
    base = mean_colour_baseline(frames)
    assert (base[0] == (100, 50, 0)).all() and (base[1] == (10, 20, 30)).all()
    other = frames.copy()
    other[1] = (13, 20, 30)  # one channel off by 3 in every pixel: mean over channels 1
    np.testing.assert_allclose(mean_colour_error(other, frames), [0.0, 1 / 255])


def test_downsampled_baseline_against_torch():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 32, 24, 3), np.uint8)
    ours = downsampled_baseline(frames, 8)
    x = torch.from_numpy(frames.astype(np.float32)).permute(0, 3, 1, 2)
    ref = F.interpolate(F.avg_pool2d(x, 8), size=(32, 24), mode="bilinear", align_corners=False)
    ref = ref.clamp(0, 255).round().permute(0, 2, 3, 1).numpy()
    # float32 block means and interpolation weights in another order: a value may round to the
    # neighbouring integer at a .5 boundary, never further
    assert np.abs(ours.astype(np.float64) - ref).max() <= 1
    flat = np.full((1, 16, 16, 3), 77, np.uint8)
    assert (downsampled_baseline(flat, 8) == 77).all()


def test_contact_sheet_layout():
    clip = np.zeros((2, 5, 4, 3), np.uint8)
    recon = np.ones((2, 5, 4, 3), np.uint8)
    sheet = contact_sheet([(clip, recon)])
    assert sheet.shape == (12, 10, 3)
    assert (sheet[:5, :4] == 0).all() and (sheet[7:, :4] == 1).all() and (sheet[5:7] == 255).all()


def _run(argv, capsys) -> tuple[int, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("vae_reconstruction_script", EVAL_DIR / "vae_reconstruction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["videos=/nonexistent"], "videos=/nonexistent: not a folder"),
    (["height=30", "width=24"], "height=30: allowed: a positive multiple of 8"),
    (["height=32"], "height=32, width=None: give both or neither"),
    (["frames=0"], "frames=0: allowed: an integer >= 1"),
    (["start=4"], "fewer than 12 frames, which start=4 frames=8 stride=1 need"),
    (["stride=0"], "stride=0: allowed: an integer >= 1"),
    (["frames=3", "stride=3"], "fewer than 7 frames, which start=0 frames=3 stride=3 need"),
])
def test_bad_input_is_one_line_and_exit_2_leaving_nothing(setup, tmp_path, capsys, extra, message):
    out = tmp_path / "report"
    argv = [f"ckpt={setup['ckpt']}", f"videos={setup['videos']}", f"out={out}", *extra]
    code, err = _run(argv, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_out_needs_overwrite(setup, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    code, err = _run([f"ckpt={setup['ckpt']}", f"videos={setup['videos']}", f"out={out}"], capsys)
    assert code == 2 and "already exists" in err
    assert list(out.iterdir()) == []


def test_figure_psnr_from_the_masks_beside_the_videos(setup, tmp_path, capsys):
    """A controlnext-synth layout (videos/ and masks/ side by side): PSNR over the figure for the
    VAE's round trip and for the first frame repeated, on the frames after the first."""
    root = tmp_path / "synth"
    (root / "videos").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(5)
    for name in ("a_clip", "b_clip"):
        write_video(root / "videos" / f"{name}.mp4", _clip(rng), fps=8)
        masks = np.zeros((FRAMES, HEIGHT, WIDTH), bool)
        for t in range(FRAMES):
            masks[t, 8:24, 4 + 2 * t:8 + 2 * t] = True  # the moving bar
        np.savez(root / "masks" / f"{name}.npz", masks=masks)
    settings = ReconstructionSettings(frames=3, stride=2, sheet_clips=1, sheet_frames=2)
    out = vae_reconstruction_report(setup["ckpt"], root / "videos", tmp_path / "report", settings=settings)
    result = json.loads((out / "vae_reconstruction.json").read_text())
    vae = load_component(setup["ckpt"], "vae", param_dtype=jnp.float32)
    for entry in result["clips"]:
        frames = read_clip(root / "videos" / f"{entry['clip']}.mp4", settings, 8)  # frames 0, 2, 4
        masks = np.load(root / "masks" / f"{entry['clip']}.npz")["masks"][0:5:2]
        repeated = np.broadcast_to(frames[:1], frames[1:].shape)
        assert entry["figure_psnr"]["first_frame_repeated"] == pytest.approx(
            float(np.mean(psnr_masked(repeated, frames[1:], masks[1:]))), rel=1e-9)
        # the true frames area-downsampled by 8 and bilinear back up, in torch; abs 0.02 dB: the two
        # float32 bilinears can round a pixel to the neighbouring uint8 value (the whole-frame test
        # of downsampled_baseline allows a difference of 1)
        x = torch.from_numpy(frames[1:].astype(np.float32)).permute(0, 3, 1, 2)
        up = F.interpolate(F.avg_pool2d(x, 8), size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)
        up = up.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
        assert entry["figure_psnr"]["downsampled"] == pytest.approx(
            float(np.mean(psnr_masked(up, frames[1:], masks[1:]))), abs=0.02)
        _, recon = _hand_round_trip(vae, frames)
        # rounding of the jitted vs eager float32 decode, as in the whole-frame test above
        assert entry["figure_psnr"]["vae"] == pytest.approx(
            float(np.mean(psnr_masked(recon[1:], frames[1:], masks[1:]))), abs=0.05)
    assert result["figure_psnr"]["vae"] == pytest.approx(
        np.mean([c["figure_psnr"]["vae"] for c in result["clips"]]))
    md = (out / "vae_reconstruction.md").read_text()
    assert "frames 0, 2, ..., 4" in md and "the first frame repeated" in md and "8x area-downsampled" in md
    # resized frames no longer match the masks: the figure scores are left out
    resized = vae_reconstruction_report(setup["ckpt"], root / "videos", tmp_path / "resized",
                                        settings=ReconstructionSettings(frames=3, height=16, width=16))
    assert json.loads((resized / "vae_reconstruction.json").read_text())["figure_psnr"] is None
    # masks of another size: one line, exit 2, before the weights load
    np.savez(root / "masks" / "b_clip.npz", masks=np.zeros((FRAMES, HEIGHT, WIDTH + 8), bool))
    code, err = _run([f"ckpt={setup['ckpt']}", f"videos={root / 'videos'}", f"out={tmp_path / 'x'}", "frames=4"], capsys)
    assert code == 2 and "b_clip.npz: masks of shape (6, 32, 32)" in err and len(err.strip().splitlines()) == 1
    # a clip without its masks file: one line, exit 2, nothing written
    (root / "masks" / "b_clip.npz").unlink()
    code, err = _run([f"ckpt={setup['ckpt']}", f"videos={root / 'videos'}", f"out={tmp_path / 'x'}", "frames=4"], capsys)
    assert code == 2 and "b_clip.mp4 has no figure masks" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
