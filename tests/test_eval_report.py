"""controlnext-eval end to end on a three-clip dataset of already generated videos."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from controlnext_jax.atomic_io import partial_prefix
from controlnext_jax.cli import CONFIG_DIR
from controlnext_jax.errors import UserError
from controlnext_jax.metrics import evaluation, plots
from controlnext_jax.metrics.seams import boundary_transitions

H, W = 64, 96
N_GEN, STRIDE, BATCH, OVERLAP = 30, 2, 12, 4
SHIFT_PX = 3  # the generated square sits this far right of the ground truth's
# 18 "keypoints" in a 26 x 46 px box around the square, inside the 96 x 64 frame wherever the square goes
# (keypoints off the canvas count as not visible)
OFFSETS = np.stack([np.linspace(-14, 12, 18), np.linspace(-18, 28, 18)[::-1]], axis=-1)


def _square_xy(t: int, clip: int) -> tuple[int, int]:
    return 12 + t + 4 * clip, 16 + t // 4


def _frame(t: int, clip: int, dx: int = 0, background: int = 40) -> np.ndarray:
    rng = np.random.default_rng(1000 * clip + t)
    img = np.clip(background + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)
    x, y = _square_xy(t, clip)
    img[y: y + 8, x + dx: x + dx + 8] = 235
    return img


def _body_keypoints(x: float, y: float) -> np.ndarray:
    """Normalised keypoints around a square whose centre is (x, y) in pixels."""
    return (np.array([x, y]) + OFFSETS) / np.array([W, H])


def synthetic_detector(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'Detects' the bright square: keypoints at fixed offsets from its centroid."""
    ys, xs = np.nonzero(frame.mean(axis=-1) > 160)
    if len(xs) == 0:
        return np.zeros((18, 2)), np.zeros(18)
    return _body_keypoints(xs.mean(), ys.mean()), np.full(18, 0.9)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    boundaries = boundary_transitions(N_GEN, BATCH, OVERLAP)
    for clip in range(3):
        folder = root / f"clip_{clip}"
        folder.mkdir()
        n_src = (N_GEN - 1) * STRIDE + 3
        gt = np.stack([_frame(t, clip) for t in range(n_src)])
        iio.imwrite(folder / "ground_truth.mp4", gt, plugin="FFMPEG", fps=14)
        shutil.copy(folder / "ground_truth.mp4", folder / "driving.mp4")
        Image.fromarray(gt[0]).save(folder / "reference.png")
        # generated: frame 0 shows the reference pose, frame j the source frame (j-1)*stride with the
        # square shifted and the background stepping up by 12 at every window boundary (a visible seam)
        gen = [_frame(0, clip)]
        for j in range(1, N_GEN):
            seams_before = sum(b < j for b in boundaries)
            gen.append(_frame((j - 1) * STRIDE, clip, dx=SHIFT_PX, background=40 + 12 * seams_before))
        iio.imwrite(folder / "generated.mp4", np.stack(gen), plugin="FFMPEG", fps=7)
        if clip == 0:  # one clip carries the poses the model was given
            kp = [_body_keypoints(*(np.array(_square_xy(0, clip)) + 3.5))]
            kp += [_body_keypoints(*(np.array(_square_xy((j - 1) * STRIDE, clip)) + 3.5)) for j in range(1, N_GEN)]
            np.savez(folder / "driving_poses.npz", keypoints=np.stack(kp), scores=np.full((N_GEN, 18), 0.95))
    return root


def _cfg(root: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=[f"dataset.root={root}", f"out={out}", "progress=false",
                                          f"sampling.batch_frames={BATCH}", f"sampling.overlap={OVERLAP}",
                                          f"alignment.sample_stride={STRIDE}", *overrides])


def _square_targets(clip):
    """The target poses of the clips without driving_poses.npz: detected on the driving frames."""
    idx = np.arange(len(clip.generated_aligned)) * STRIDE
    driving = iio.imread(clip.files.driving, plugin="FFMPEG")[idx]
    found = [synthetic_detector(f) for f in driving]
    return np.stack([k for k, _ in found]), np.stack([s for _, s in found])


def _check_png(path: Path, title: str) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] >= 600 and img.info.get("Title") == title
        pixels = np.asarray(img.convert("L"))
        assert pixels.std() > 5  # something is drawn


@pytest.mark.slow  # ~30-40 s on 2 CPU cores: FVD's I3D compiles
def test_full_report_end_to_end(dataset, tmp_path):
    out = tmp_path / "report"
    cfg = _cfg(dataset, out, "fvd.clip_length=10", "fvd.batch_size=3", "seed=7")
    assert evaluation.run(cfg, pose_tools=(synthetic_detector, _square_targets), command="test") == out
    assert sorted(p.name for p in out.iterdir()) == [
        "frame_metrics.png", "pose_accuracy.png", "report.json", "report.md", "seams.png"]
    assert not list(tmp_path.glob(partial_prefix(out) + "*"))  # no temporary of the atomic writer left
    report = json.loads((out / "report.json").read_text())
    header, results = report["header"], report["results"]
    print(json.dumps(results, indent=1))

    # header: reproducible
    assert re.fullmatch(r"controlnext-jax \S+ \(commit [0-9a-f]{40}(\+dirty)?\)", header["code"]), header["code"]
    assert header["seed"].startswith("7 (recorded") and "clip_length: 10" in header["config_yaml"]
    assert "sha256" in header["i3d_weights"] and "3 clips" in header["dataset"]
    assert header["fvd sampling"].startswith("clips of 10 frames, frame stride 1, at most 1")

    # FVD over 3 vs 3 clips, finite and positive (the videos differ)
    assert results["fvd"]["fvd_clips_generated"] == results["fvd"]["fvd_clips_real"] == 3
    assert 0 < results["fvd"]["fvd"] < 1e4
    # frame metrics on the 29 aligned frames of each clip
    assert results["frames"]["frames_compared"] == 3 * (N_GEN - 1)
    assert 10 < results["frames"]["psnr"] < 40 and 0 < results["frames"]["l1"] < 0.2
    # pose: every keypoint off by SHIFT_PX to the right (mp4 blurs it a little)
    pose = results["pose"]
    assert pose["AKD_px"] == pytest.approx(SHIFT_PX, abs=0.6)
    assert pose["MKR"] == 0 and pose["PCK@0.1"] == pose["PCK@0.2"] == 1.0 and pose["frames"] == 3 * (N_GEN - 1)
    assert 0.5 < pose["mean_oks"] < 1.0 and pose["AP50"] == 1.0
    assert report["details"]["pose"]["target_source"]["clip_0"] == "driving_poses.npz"
    # seams: background steps at the boundaries only
    seams = results["seams"]
    # (a 12/255 = 0.047 step on a noisy background; the mp4 encoder smooths part of it away)
    assert seams["seam_ratio"] > 2 and 0.8 < seams["seam_ratio_ground_truth"] < 1.25
    assert 0.02 < seams["seam_boundary_change"] - seams["seam_interior_change"] < 0.06
    assert seams["seam_boundaries"] == 3 * len(boundary_transitions(N_GEN, BATCH, OVERLAP))
    skipped = {s["metric"]: s["reason"] for s in report["skipped"]}
    assert "LPIPS" in skipped and "FID" in skipped

    # every metric has a row per clip, in report.json and report.md
    per_clip = report["per_clip"]
    assert sorted(per_clip) == ["frames", "fvd", "pose", "seams"]
    for metric, rows in per_clip.items():
        assert sorted(rows) == ["clip_0", "clip_1", "clip_2"], metric
    assert per_clip["fvd"]["clip_0"]["fvd_clips_generated"] == 1 and per_clip["fvd"]["clip_0"]["fvd"] == "nan"
    assert per_clip["frames"]["clip_1"]["frames"] == N_GEN - 1
    assert per_clip["pose"]["clip_2"]["AKD_px"] == pytest.approx(SHIFT_PX, abs=0.6)
    assert per_clip["seams"]["clip_0"]["seam_ratio"] > 2
    # keypoints detected and targeted, per frame
    keypoints = report["details"]["pose"]["keypoints"]["clip_1"]
    for side in ("detected", "target"):
        assert np.array(keypoints[side]["keypoints"]).shape == (N_GEN - 1, 18, 2)
        assert np.array(keypoints[side]["scores"]).shape == (N_GEN - 1, 18)
    shift = (np.array(keypoints["detected"]["keypoints"]) - np.array(keypoints["target"]["keypoints"])) * [W, H]
    assert np.median(shift[..., 0]) == pytest.approx(SHIFT_PX, abs=0.6)
    assert set(report["details"]["speed"]) == {"fvd", "frames", "pose", "seams"}

    md = (out / "report.md").read_text()
    for metric in ("fvd", "frames", "pose", "seams"):
        section = md.split(f"## {metric}\n", 1)[1].split("\n## ", 1)[0]
        assert "Per clip" in section and all(f"| clip_{i} |" in section for i in range(3)), metric
    assert "## Speed" in md
    assert "**FVD = " in md and "3 generated vs 3 real clips" in md and "not the uint8 subtraction" in md
    assert "## Full config" in md and "![seams](seams.png)" in md
    _check_png(out / "seams.png", f"Frame-to-frame change and window boundaries (batch_frames {BATCH}, "
                                  f"overlap {OVERLAP})")
    _check_png(out / "frame_metrics.png", "Frame metrics per frame (generated vs ground truth)")
    _check_png(out / "pose_accuracy.png", "Pose accuracy per frame (generated vs target poses)")


def test_plots_draw_what_their_titles_say(tmp_path):
    changes = np.linspace(0.01, 0.02, 29)
    per_clip = {"a": {"changes": changes, "boundaries": [8, 11], "gt_changes": changes[1:],
                      "first_transition": 1, "window_starts": [0, 8, 18]}}
    fig = plots.plot_seams(per_clip, 12, 4, tmp_path / "s.png")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), changes)
    vlines = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert vlines == [8.5, 11.5]
    curves = {"c": {"psnr": np.arange(5.0)}}
    fig = plots.plot_per_frame(curves, [("psnr", "PSNR (dB)")], tmp_path / "p.png", "PSNR per frame")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), np.arange(5.0))
    assert fig.axes[0].get_ylabel() == "PSNR (dB)" and fig._suptitle.get_text() == "PSNR per frame"
    _check_png(tmp_path / "p.png", "PSNR per frame")


def test_pose_skipped_without_pose_package(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "controlnext_jax.pose.video", None)  # import fails
    out = tmp_path / "r"
    evaluation.run(_cfg(dataset, out, "fvd.enabled=false", "dataset.max_clips=1"))
    report = json.loads((out / "report.json").read_text())
    skipped = {s["metric"]: s["reason"] for s in report["skipped"]}
    assert "pose detector is not available" in skipped["pose accuracy"]
    assert "pose" not in report["results"] and "Not computed" in (out / "report.md").read_text()


def test_errors_leave_no_output(dataset, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(UserError, match="ckpt: required with generate=true"):
        evaluation.run(_cfg(dataset, out, "generate=true"))
    with pytest.raises(UserError, match="pose_metrics.align='mirror': allowed values are rescale, retarget, none"):
        evaluation.run(_cfg(dataset, out, "pose_metrics.align=mirror"))
    with pytest.raises(UserError, match="frames.lpips_net='squeeze': allowed values are alex, vgg"):
        evaluation.run(_cfg(dataset, out, "frames.lpips_net=squeeze"))
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    (broken / "clip_2" / "ground_truth.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError) as e:
        evaluation.run(_cfg(broken, out, "fvd.enabled=false", "pose_metrics.enabled=false"))
    assert str(e.value).startswith(f"dataset.root={broken / 'clip_2' / 'ground_truth.mp4'}: cannot read it as a video")
    assert "\n" not in str(e.value) and "ffmpeg version" not in str(e.value)
    (broken / "clip_1" / "generated.mp4").unlink()
    with pytest.raises(UserError, match="clip_1/generated.mp4"):
        evaluation.run(_cfg(broken, out, "fvd.enabled=false", "pose_metrics.enabled=false"))
    with pytest.raises(ValueError, match="clip_length"):
        evaluation.run(_cfg(dataset, out, "fvd.clip_length=4", "pose_metrics.enabled=false"))
    with pytest.raises(ValueError, match="overlap"):
        evaluation.run(_cfg(dataset, out, "fvd.enabled=false", "pose_metrics.enabled=false", "sampling.overlap=12"))
    assert list(tmp_path.iterdir()) == [broken]  # no output, no temporary folder
    out.mkdir()
    with pytest.raises(UserError, match="overwrite"):
        evaluation.run(_cfg(dataset, out, "fvd.enabled=false"))


def test_cli_reports_errors_cleanly(dataset, tmp_path):
    out = tmp_path / "r"
    command = [sys.executable, "-m", "controlnext_jax.commands.evaluate"]
    proc = subprocess.run([*command, f"dataset.root={dataset}", f"out={out}", "generate=true"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "ckpt: required with generate=true" in proc.stderr
    proc = subprocess.run([*command, f"out={out}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "missing required parameter: dataset.root=" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # Hydra wrote no outputs/ folder either


def test_fid_and_lpips_with_user_weights(dataset, tmp_path):
    from tests.test_metrics_lpips import _alexnet_features

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, (2, 2))
            return pooled.flatten(1)

    torch.jit.script(Detector()).save(str(tmp_path / "inception.pt"))
    torch.manual_seed(0)
    backbone = torch.nn.Module()
    backbone.features = _alexnet_features()
    torch.save(backbone.state_dict(), tmp_path / "alexnet.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1 for i, c in enumerate([64, 192, 384, 256, 256])},
               tmp_path / "alex.pth")
    out = tmp_path / "r"
    evaluation.run(_cfg(dataset, out, "fvd.enabled=false", "pose_metrics.enabled=false",
                       f"frames.fid_extractor={tmp_path / 'inception.pt'}",
                       f"frames.lpips_backbone={tmp_path / 'alexnet.pth'}",
                       f"frames.lpips_linear={tmp_path / 'alex.pth'}"))
    report = json.loads((out / "report.json").read_text())
    fid = report["results"]["fid"]
    assert fid["fid_frames_generated"] == fid["fid_frames_real"] == 3 * (N_GEN - 1)
    assert fid["fid"] > 0 and "sha256" in report["header"]["fid_extractor"]
    assert report["results"]["lpips"]["lpips_alex"] > 0 and "sha256" in report["header"]["lpips_weights"]
    assert len(report["details"]["lpips"]["per_clip"]["clip_0"]) == N_GEN - 1
    assert not {"FID", "LPIPS"} & {s["metric"] for s in report["skipped"]}
    with pytest.raises(ValueError, match="frames.lpips_linear: required"):
        evaluation.run(_cfg(dataset, tmp_path / "r2", "fvd.enabled=false", "pose_metrics.enabled=false",
                           f"frames.lpips_backbone={tmp_path / 'alexnet.pth'}"))


def test_fvd_without_enough_clips_is_reported_not_computed(dataset, tmp_path):
    out = tmp_path / "r"
    # 29 aligned frames per clip: no 40-frame clip fits, so there is no FVD to give
    evaluation.run(_cfg(dataset, out, "fvd.clip_length=40", "pose_metrics.enabled=false"))
    report = json.loads((out / "report.json").read_text())
    assert "fvd" not in report["results"]["fvd"] and report["results"]["fvd"]["fvd_clips_generated"] == 0
    skipped = {s["metric"]: s["reason"] for s in report["skipped"]}
    assert skipped["FVD"].startswith("not computed: fewer than 2 clips on a side (0 generated / 0 real")
    assert "**FVD =" not in (out / "report.md").read_text()


def test_fvd_evaluator_fills_batches_across_videos():
    """Clips queue across videos: 3 videos x (1 generated + 1 real) clips at batch 4 are two
    I3D calls (4 + 2 clips), each side's embeddings kept in order."""
    from controlnext_jax.metrics.dataset import AlignedClip
    from controlnext_jax.metrics.evaluators import FVDEvaluator
    from controlnext_jax.metrics.fvd import ClipSampling

    class CountingEmbedder:
        batch_size = 4
        calls: list[int] = []

        def __call__(self, clips):
            self.calls.append(len(clips))
            return [np.array([c[0, 0, 0, 0]], np.float64) for c in clips]

    embedder = CountingEmbedder()
    evaluator = FVDEvaluator(embedder, ClipSampling(clip_length=9, max_clips=1))
    for i in range(3):
        gen = np.full((10, 4, 4, 3), 10 + i, np.uint8)
        evaluator.update(AlignedClip(f"c{i}", None, gen, gen, np.full_like(gen, 100 + i), np.arange(10), None))
    dict(evaluator.results())
    assert embedder.calls == [4, 2]
    assert [e[0] for e in evaluator.generated] == [10, 11, 12] and [e[0] for e in evaluator.real] == [100, 101, 102]


# --------------------------------------------------- offset, frame limit, media inputs
LEVEL_STEP = 8  # ground-truth frame i is a flat grey of level LEVEL_STEP * i (with a little texture)


def _level_frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), LEVEL_STEP * i, np.uint8)
    img[::8, ::8] = 255 - LEVEL_STEP * i
    return img


class LevelDetector:
    """A 'detector' whose one person's keypoints encode the frame's grey level in x, so the
    target poses tell which driving frames were used. Takes the mediapipe config's keys."""

    def __init__(self, **_):
        pass

    def detect(self, frame):
        from controlnext_jax.pose.types import NUM_KEYPOINTS, Pose

        level = np.median(frame)
        y = np.resize(np.linspace(0.1, 0.9, 18), NUM_KEYPOINTS)  # the body spread over the frame's height
        kp = np.stack([np.full(NUM_KEYPOINTS, level / 255.0), y], axis=-1)
        return Pose(kp[None], np.full((1, NUM_KEYPOINTS), 0.9))


@pytest.fixture(scope="module")
def levels(tmp_path_factory) -> Path:
    """One clip generated from driving frame OFFSET on (every STRIDE), reference as .webp."""
    root = tmp_path_factory.mktemp("levels")
    folder = root / "clip_a"
    folder.mkdir()
    gt = np.stack([_level_frame(i) for i in range(30)])
    iio.imwrite(folder / "ground_truth.mp4", gt, plugin="FFMPEG", fps=14)
    shutil.copy(folder / "ground_truth.mp4", folder / "driving.mp4")
    Image.fromarray(_level_frame(3)).save(folder / "reference.webp", lossless=True)
    gen = [_level_frame(3)] + [_level_frame(LEVEL_OFFSET + j * STRIDE) for j in range(12)]
    iio.imwrite(folder / "generated.mp4", np.stack(gen), plugin="FFMPEG", fps=7)
    return root


LEVEL_OFFSET = 5


def test_offset_and_frame_limit_are_honoured_everywhere(levels, tmp_path):
    out = tmp_path / "r"
    evaluation.run(_cfg(levels, out, f"alignment.offset={LEVEL_OFFSET}", "alignment.max_frames=6",
                        "fvd.clip_length=9", "fvd.batch_size=2", "pose._target_=tests.test_eval_report.LevelDetector",
                        "pose_metrics.align=none"))
    report = json.loads((out / "report.json").read_text())
    clip = report["details"]["clips"]["clip_a"]
    assert (clip["generated"], clip["aligned"], clip["first_source_frame"]) == (7, 6, LEVEL_OFFSET)
    assert clip["last_source_frame"] == LEVEL_OFFSET + 5 * STRIDE
    assert report["results"]["frames"]["frames_compared"] == 6
    assert report["results"]["frames"]["psnr"] > 35  # the right ground-truth frames
    assert len(report["details"]["seams"]["per_clip"]["clip_a"]["changes"]) == 6  # 7 generated frames
    assert report["results"]["fvd"]["fvd_clips_generated"] == 0  # 6 aligned frames: no 9-frame clip fits
    # the target poses come from driving frames OFFSET, OFFSET + STRIDE, ... (the reference .webp was read)
    target = np.array(report["details"]["pose"]["keypoints"]["clip_a"]["target"]["keypoints"])
    np.testing.assert_allclose(target[:, 0, 0] * 255 / LEVEL_STEP, LEVEL_OFFSET + STRIDE * np.arange(6), atol=0.3)
    assert report["results"]["pose"]["PCK@0.05"] == 1.0
    assert "ground-truth frame 5 + j * 2" in report["header"]["alignment"]
    # without the offset the same videos are misaligned
    evaluation.run(_cfg(levels, tmp_path / "r0", "alignment.max_frames=6", "fvd.enabled=false",
                        "pose_metrics.enabled=false"))
    assert json.loads((tmp_path / "r0" / "report.json").read_text())["results"]["frames"]["psnr"] < 30


@pytest.mark.parametrize("key,value", [("alignment.offset", -1), ("alignment.max_frames", -2),
                                       ("alignment.sample_stride", 0)])
def test_alignment_ranges(levels, tmp_path, key, value):
    with pytest.raises(UserError, match=f"{key}={value}: must be an integer >= "):
        evaluation.run(_cfg(levels, tmp_path / "r", f"{key}={value}"))
    assert list(tmp_path.iterdir()) == []


def test_two_reference_images_are_refused(levels, tmp_path):
    root = tmp_path / "two"
    shutil.copytree(levels, root)
    Image.fromarray(_level_frame(3)).save(root / "clip_a" / "reference.png")
    with pytest.raises(UserError, match="several reference images"):
        evaluation.run(_cfg(root, tmp_path / "r", "fvd.enabled=false"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]


def _eval_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "controlnext_jax.commands.evaluate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["generated.mp4", "ground_truth.mp4", "reference.png"])
def test_cli_corrupt_inputs_are_one_line(dataset, tmp_path, name):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    data = (broken / "clip_1" / name).read_bytes()
    (broken / "clip_1" / name).write_bytes(data[: len(data) // 3])
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [f"dataset.root={broken}", f"out={tmp_path / 'r'}", "fvd.enabled=false", "progress=false"]
    if name != "reference.png":
        args.append("pose_metrics.enabled=false")
    else:  # the reference is read for the driving poses of clips without driving_poses.npz
        args += ["pose._target_=tests.test_eval_report.LevelDetector", "pose_metrics.align=none"]
    proc = _eval_cli(*args, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "ffmpeg version" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"controlnext-eval: error: dataset.root={broken / 'clip_1' / name}: "), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report, no temporary folder


def test_cli_progress_and_no_third_party_noise(dataset, tmp_path):
    proc = _eval_cli(f"dataset.root={dataset}", f"out={tmp_path / 'r'}", "dataset.max_clips=2",
                     "alignment.max_frames=8", "fvd.clip_length=9", "fvd.batch_size=2",
                     "pose._target_=tests.test_eval_report.LevelDetector", cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    text = proc.stderr.replace("\r", "\n")
    for bar in ("clips:", "fvd clip_0", "frames clip_1", "pose clip_0", "seams clip_1"):
        assert bar in text, bar
    # JAX runs (FVD) before ffmpeg starts for the next clip: no fork warning, no other warnings
    assert "Warning" not in text and "os.fork" not in text and "W0000" not in text, text
