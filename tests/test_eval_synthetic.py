"""The synthetic evaluation set, figure-region frame metrics, the baselines and the comparison
of a checkpoint against them (docs/embedded_model_eval.md).

The comparison runs end to end on the tiny random-weight checkpoint (its videos are noise,
but every step runs for real) with two short clips at 64x64 and two sampling steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from controlnext_jax.commands.synth import main as synth_main
from controlnext_jax.errors import UserError
from controlnext_jax.metrics import frame_metrics
from controlnext_jax.metrics.baselines import generated_frame_count, write_repeated_reference
from controlnext_jax.metrics.comparison import GenerationSettings, compare_baselines
from controlnext_jax.metrics.dataset import (
    AlignedClip,
    Alignment,
    align_clip,
    cover_crop_masks,
    cover_crop_points,
    discover,
    read_generated,
    read_ground_truth_poses,
)
from controlnext_jax.metrics.evaluators import FrameEvaluator, PoseEvaluator
from controlnext_jax.pose.media import read_video
from controlnext_jax.pose.video import prepare_reference
from controlnext_jax.synthetic import make_clip
from controlnext_jax.synthetic.dataset import clip_plan
from controlnext_jax.synthetic.eval_set import write_eval_set
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

FRAMES, HEIGHT, WIDTH = 9, 96, 64  # taller than the 64x64 generation: the cover crop is exercised


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    return write_eval_set(tmp_path_factory.mktemp("synth") / "eval", num_clips=2, frames=FRAMES, height=HEIGHT,
                          width=WIDTH, seed=3)


def test_eval_set_layout(eval_set):
    plan = clip_plan("heldout", 2, 3)
    assert sorted(p.name for p in eval_set.iterdir()) == sorted([e["name"] for e in plan] + ["dataset.json"])
    assert json.loads((eval_set / "dataset.json").read_text())["clips"] == plan
    entry = plan[1]
    clip = make_clip(entry["identity"], entry["motion"], entry["seed"], FRAMES, HEIGHT, WIDTH)
    folder = eval_set / entry["name"]
    assert sorted(p.name for p in folder.iterdir()) == ["driving.mp4", "figure_mask.npz", "ground_truth.mp4",
                                                        "ground_truth_poses.npz", "reference.png"]
    # self-reenactment: the reference is frame 0, losslessly
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "reference.png").convert("RGB")), clip.frames[0])
    gt = read_video(folder / "ground_truth.mp4")
    assert gt.shape == clip.frames.shape
    # H.264 is lossy: decoded frames within a few levels on average of the rendered ones
    assert np.abs(gt.astype(float) - clip.frames).mean() < 4.0
    np.testing.assert_array_equal(read_video(folder / "driving.mp4"), gt)
    with np.load(folder / "figure_mask.npz") as data:
        np.testing.assert_array_equal(data["masks"], clip.masks)
    truth = read_ground_truth_poses(folder / "ground_truth_poses.npz")
    np.testing.assert_allclose(truth.keypoints * [WIDTH, HEIGHT], clip.keypoints, atol=1e-9)
    np.testing.assert_array_equal(truth.scores, clip.visible)
    np.testing.assert_array_equal(truth.reference_keypoints, truth.keypoints[0])
    assert truth.size == (HEIGHT, WIDTH)
    # the clip's discovered by the evaluation, with its masks and true poses
    assert [c.clip_id for c in discover(eval_set)] == sorted(e["name"] for e in plan)
    assert discover(eval_set)[0].figure_mask is not None


def test_synth_command_layout_eval(tmp_path, capsys):
    synth_main([f"out={tmp_path / 'e'}", "split=heldout", "layout=eval", "num_clips=1", "frames=2", "height=32",
                "width=32"])
    (folder,) = [p for p in (tmp_path / "e").iterdir() if p.is_dir()]
    assert (folder / "figure_mask.npz").is_file() and (folder / "reference.png").is_file()
    with pytest.raises(SystemExit) as e:
        synth_main([f"out={tmp_path / 'f'}", "layout=frames"])
    assert e.value.code == 2 and "layout='frames': allowed values are pairs, eval" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_masks_and_points_follow_the_frames_geometry():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)
    # a block of the frame painted white and marked in the mask: after the cover crop to 48x48
    # the mask still marks exactly the white pixels (away from the antialiased edge)
    mask = np.zeros((96, 64), bool)
    mask[40:70, 10:30] = True
    frame[mask] = 255
    small = prepare_reference(frame, 48, 48)
    small_mask = cover_crop_masks(mask[None], 48, 48)[0]
    assert small_mask.shape == (48, 48)
    assert np.all(small[small_mask] >= 128)
    # (96, 64) covers 48x48 at scale 0.75 (72, 48), centre crop from row 12: rows 40..70 -> 18..40.5
    rows = np.flatnonzero(small_mask.any(axis=1))
    assert rows[0] == 18 and rows[-1] == 40
    # a keypoint at the block's centre lands at the block's centre in the crop
    point = cover_crop_points(np.array([[20 / 64, 55 / 96]]), (96, 64), 48, 48)[0] * 48
    np.testing.assert_allclose(point, [15.0, 55 * 0.75 - 12], atol=1e-9)


def test_figure_metrics_by_hand():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
    masks = np.zeros((2, 32, 40), bool)
    masks[:, 8:24, 10:30] = True
    gen = gt.copy()
    noise = rng.integers(-20, 21, gen.shape)
    gen = np.clip(gen.astype(int) + noise, 0, 255).astype(np.uint8)
    gen[1][~masks[1]] = rng.integers(0, 256, (int((~masks[1]).sum()), 3))  # frame 1: a wrong background
    gen[1][masks[1]] = gt[1][masks[1]]  # ... and a perfect figure
    diff = gen.astype(np.float64) - gt
    mse0 = np.mean(diff[0][masks[0]] ** 2)
    psnr = frame_metrics.psnr_masked(gen, gt, masks)
    np.testing.assert_allclose(psnr[0], 10 * np.log10(255 ** 2 / mse0), rtol=1e-12)  # float64 both ways
    assert psnr[1] == np.inf and np.isfinite(frame_metrics.psnr(gen, gt)[1])
    np.testing.assert_allclose(frame_metrics.l1_masked(gen, gt, masks),
                               [np.abs(diff[0][masks[0]]).mean() / 255, 0.0], rtol=1e-12)
    whole, figure = frame_metrics.ssim_with_masks(gen, gt, masks)
    np.testing.assert_array_equal(whole, frame_metrics.ssim(gen, gt))  # the same maps, the same order
    # by hand: scikit-image's full SSIM map (channels averaged), mean over mask pixels inside the 3-pixel border
    from skimage.metrics import structural_similarity

    for i in range(2):
        maps = np.mean([structural_similarity(gen[i][..., c], gt[i][..., c], data_range=255, full=True)[1]
                        for c in range(3)], axis=0)
        inner = np.zeros_like(masks[i])
        inner[3:-3, 3:-3] = True
        np.testing.assert_allclose(figure[i], maps[masks[i] & inner].mean(), rtol=1e-10)
    # the wrong background costs the frame, the figure only where its SSIM windows reach over the edge
    assert figure[1] > 0.75 and whole[1] < 0.5
    empty = np.zeros_like(masks)
    assert np.isnan(frame_metrics.psnr_masked(gen, gt, empty)).all()


def test_frame_evaluator_reports_figure_metrics_only_with_masks():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    masks = rng.random((3, 24, 24)) < 0.3
    evaluator = FrameEvaluator()
    evaluator.update(AlignedClip("plain", None, gen, gen, gt, np.arange(3), None))
    assert "psnr_figure" not in dict(evaluator.results())
    evaluator.update(AlignedClip("masked", None, gen, gen, gt, np.arange(3), None, masks))
    results = dict(evaluator.results())
    np.testing.assert_allclose(results["psnr_figure"], frame_metrics.psnr_masked(gen, gt, masks).mean(), rtol=1e-12)
    np.testing.assert_allclose(results["l1_figure"], frame_metrics.l1_masked(gen, gt, masks).mean(), rtol=1e-12)
    assert results["frames_compared_figure"] == 3 and results["frames_compared"] == 6
    assert "psnr_figure" in evaluator.per_clip()["masked"] and "psnr_figure" not in evaluator.per_clip()["plain"]


def _level_detector(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in detector whose 18 keypoints sit at x = the frame's mean level / 255."""
    return np.full((18, 2), frame.mean() / 255.0), np.ones(18)


def test_pose_targets():
    rng = np.random.default_rng(4)
    gen = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    true = (rng.random((3, 18, 2)), np.ones((3, 18)))
    driving = (rng.random((3, 18, 2)), np.ones((3, 18)))
    clip = AlignedClip("c", None, gen, gen, gt, np.arange(3), driving, None, true)
    expected = {"driving": driving[0], "true_poses": true[0],
                "ground_truth": np.stack([_level_detector(f)[0] for f in gt])}
    for target, keypoints in expected.items():
        evaluator = PoseEvaluator(_level_detector, target=target)
        evaluator.update(clip)
        np.testing.assert_array_equal(evaluator.clips["c"].target, keypoints, err_msg=target)
        np.testing.assert_array_equal(evaluator.clips["c"].detected, np.stack([_level_detector(f)[0] for f in gen]))
    with pytest.raises(UserError, match="pose_metrics.target='skeleton'"):
        PoseEvaluator(_level_detector, target="skeleton")
    with pytest.raises(UserError, match="needs the clip's ground_truth_poses.npz"):
        PoseEvaluator(_level_detector, target="true_poses").update(
            AlignedClip("c", None, gen, gen, gt, np.arange(3), driving))


def test_align_clip_brings_masks_to_the_generated_size(eval_set, tmp_path):
    clip = discover(eval_set)[0]
    with np.load(clip.figure_mask) as data:
        masks = data["masks"]
    alignment = Alignment(sample_stride=2)
    generated = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    aligned = align_clip(clip, generated, alignment)
    np.testing.assert_array_equal(aligned.driving_indices, [0, 2, 4])
    np.testing.assert_array_equal(aligned.figure_masks, cover_crop_masks(masks[[0, 2, 4]], 64, 64))
    assert aligned.true_poses[0].shape == (3, 18, 2)


def test_repeated_reference_baseline(eval_set, tmp_path):
    out = write_repeated_reference(eval_set, tmp_path / "rep", height=64, width=48, max_frame_num=25,
                                   sample_stride=2, fps=7)
    clips = discover(eval_set)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c.clip_id}.mp4" for c in clips)
    video = read_video(out / f"{clips[0].clip_id}.mp4")
    # 9 driving frames at stride 2 -> frames 0, 2, 4, 6, 8, after the reference-pose frame
    assert video.shape == (1 + 5, 64, 48, 3) == (generated_frame_count(FRAMES, 25, 2), 64, 48, 3)
    reference = prepare_reference(np.asarray(Image.open(clips[0].reference).convert("RGB")), 64, 48)
    assert np.abs(video.astype(float) - reference).mean() < 4.0  # H.264 round trip
    assert generated_frame_count(FRAMES, 3, 2) == 3  # max_frame_num caps it
    # the evaluation takes them as generated videos
    assert len(read_generated(discover(eval_set, out)[0], Alignment())) == 6
    with pytest.raises(UserError, match="max_frame_num"):
        write_repeated_reference(eval_set, tmp_path / "bad", height=64, width=48, max_frame_num=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return Path(build_random_release(tmp_path_factory.mktemp("ckpt"), model_configs("tiny"), seed=5)[1])


# Slow only on its first run: compiling the tiny pipeline takes ~30-90 s on 2 busy cores; the
# programs then come from the default persistent compilation cache (generation.compilation_cache),
# and the rest of the test takes ~20 s.
@pytest.mark.slow
def test_compare_baselines_end_to_end(eval_set, ckpt, tmp_path):
    settings = GenerationSettings(height=64, width=64, num_inference_steps=2, batch_frames=3, overlap=1,
                                  sample_stride=4, max_frame_num=3, seed=7)
    out = compare_baselines(ckpt, eval_set, tmp_path / "cmp", settings=settings, untrained_seed=2, command="test")
    result = json.loads((out / "comparison.json").read_text())
    assert set(result["results"]) == {"trained", "untrained", "reference_repeated"}
    for method, values in result["results"].items():
        assert isinstance(values["psnr_figure"], float) and isinstance(values["psnr"], float), method
    assert result["header"]["command"] == "test" and str(ckpt) in result["header"]["checkpoint"]
    assert result["frames_compared"] == 2 * 2  # two clips x (3 frames - the reference-pose frame)
    # each method's own report, its figure metric equal to the table's
    report = json.loads((out / "eval" / "untrained" / "report.json").read_text())
    assert report["results"]["frames"]["psnr_figure"] == result["results"]["untrained"]["psnr_figure"]
    assert report["details"]["generation"][discover(eval_set)[0].clip_id]["pose_source"] == "ground_truth_poses.npz"
    # the untrained baseline really is another network than the trained one: other videos
    trained = read_video(sorted((out / "eval" / "trained" / "generated").iterdir())[0])
    untrained = read_video(sorted((out / "eval" / "untrained" / "generated").iterdir())[0])
    assert trained.shape == untrained.shape == (3, 64, 64, 3) and np.abs(trained.astype(int) - untrained).mean() > 5
    repeated = json.loads((out / "eval" / "reference_repeated" / "report.json").read_text())
    assert repeated["results"]["pose"]["frames"] == 4  # pose metric ran (detector on generated vs ground truth)
    assert "detection_rate" in result["detector_check"]
    # the recorded commands name the final folders, not the temporary one they were written in
    assert f"out={out}/eval/trained" in result["header"]["eval commands"]["trained"] and ".partial" not in md_all(out)
    md = (out / "comparison.md").read_text()
    assert "| trained |" in md and "margin over untrained" in md and "PSNR figure" in md
    # contact sheet: per clip ground truth, trained, untrained, repeated reference; the reference
    # image, then the 2 aligned frames (generated frames 1 and 2: frame 0 is the reference pose)
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.shape == (2 * 4 * 66 - 2, 3 * 66 - 2, 3) and "contact_sheet.png" in md
    np.testing.assert_array_equal(sheet[66:130, 66:130], trained[1])
    np.testing.assert_array_equal(sheet[132:196, 132:196], untrained[2])
    assert (sheet[66:130, :64] == 255).all()


def md_all(out: Path) -> str:
    return (out / "comparison.md").read_text() + (out / "comparison.json").read_text()
