"""The synthetic figure data set (controlnext_jax.synthetic, controlnext-synth).

Clips must be reproducible, show different people for different identities, keep every keypoint
in the frame and on the figure, carry the pose video our renderer draws for those keypoints, move
smoothly but visibly, keep the held-out identities out of training, and be readable by the
training data loader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlnext_jax.commands import synth
from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.types import NUM_KEYPOINTS, Pose
from controlnext_jax.synthetic import SPLITS, make_clip, make_identity
from controlnext_jax.synthetic.dataset import clip_plan
from controlnext_jax.synthetic.motion import MOTIONS, draw_params, motion_track
from controlnext_jax.synthetic.skeleton import bone_lengths
from controlnext_jax.training.data import DataConfig, TrainingDataLoader, check_data

H, W = 96, 72  # not square: a swapped x / y normalisation would show


def test_same_seed_gives_identical_clips():
    a = make_clip(5, "dance", 3, frames=4, height=H, width=W)
    b = make_clip(5, "dance", 3, frames=4, height=H, width=W)
    for name in ("frames", "pose_frames", "keypoints", "visible", "masks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = make_clip(5, "dance", 4, frames=4, height=H, width=W)
    assert np.abs(a.frames.astype(int) - c.frames).mean() > 5  # another seed: another scene


def test_identities_look_different():
    # same motion and seed (same background, camera and pose timing): only the person changes
    ids = (0, 1, 2, 3, 1_000_000)
    clips = {i: make_clip(i, "idle_sway", 11, frames=1, height=H, width=W) for i in ids}
    for a in ids:
        for b in ids:
            if a < b:
                ca, cb = clips[a], clips[b]
                figure = ca.masks[0] | cb.masks[0]
                # mean colour difference over the two figures' pixels, 0..255
                diff = np.abs(ca.frames[0].astype(int) - cb.frames[0])[figure].mean()
                assert diff > 20, (a, b, diff)
    assert make_identity(7) == make_identity(7)
    assert len({make_identity(i).shirt for i in range(50)}) == 50


@pytest.mark.parametrize("motion", MOTIONS)
def test_keypoints_inside_frame_and_on_the_figure(motion):
    # 192 x 144: the thinnest part at a joint (a slim figure's wrist) is then over 3 px wide;
    # fps=3: 8 frames span 2.7 s, most of each motion's cycle
    height, width = 192, 144
    for seed in (0, 1):
        clip = make_clip(10 + seed, motion, seed, frames=8, height=height, width=width, fps=3)
        x, y = clip.keypoints[..., 0], clip.keypoints[..., 1]
        assert (x >= 0).all() and (x < width).all() and (y >= 0).all() and (y < height).all()
        for t, j in zip(*np.nonzero(clip.visible)):
            col, row = int(x[t, j]), int(y[t, j])
            # the figure covers the joint's pixel and its 8 neighbours
            assert clip.masks[t, max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].all(), (motion, seed, t, j)
        assert clip.visible[:, 1:14].all()  # neck to ankles always count as visible; face points turn away


def test_pose_frames_are_the_pose_renderer_on_the_keypoints():
    clip = make_clip(3, "turn", 5, frames=8, height=H, width=W, fps=4)
    assert not clip.visible.all()  # the turn shows the back: some face points are hidden
    for t in range(len(clip.frames)):
        points = np.full((1, NUM_KEYPOINTS, 2), np.nan)
        scores = np.zeros((1, NUM_KEYPOINTS))
        points[0, :18] = clip.keypoints[t] / (W, H)
        scores[0, :18] = clip.visible[t]
        np.testing.assert_array_equal(clip.pose_frames[t], draw_pose(Pose(points, scores), H, W))


@pytest.mark.parametrize("motion", MOTIONS)
def test_motions_are_smooth_and_move(motion):
    rng = np.random.default_rng(123)
    for identity in rng.integers(0, 1000, 3):
        bones = bone_lengths(make_identity(int(identity)))
        track = motion_track(motion, bones, frames=60, fps=15, params=draw_params(motion, rng))
        xy = track.joints[..., :2]  # body units: the figure is ~1 tall
        step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
        accel = np.linalg.norm(np.diff(xy, 2, axis=0), axis=-1)
        # at 15 fps no joint moves more than 15% of the body height per frame (a walking foot's
        # swing, the fastest part, reaches ~10%), and the velocity changes gradually: the largest
        # change per frame is ~0.06, so a one-frame glitch of 0.05 or jitter of a few hundredths fails
        assert step.max() < 0.15, (motion, step.max())
        assert accel.max() < 0.08, (motion, accel.max())
        # not a still: some joint travels at least 5% of the body height during the 4 s
        assert np.ptp(xy, axis=0).max() > 0.05, motion


def test_train_and_heldout_are_disjoint():
    train, heldout = SPLITS["train"], SPLITS["heldout"]
    assert not set(train.identities) & set(heldout.identities)
    assert set(heldout.motions) - set(train.motions)  # a motion family never seen in training
    for split in SPLITS:
        plan = clip_plan(split, 40, seed=0)
        assert {c["identity"] for c in plan} <= set(SPLITS[split].identities)
        assert {c["motion"] for c in plan} == set(SPLITS[split].motions)


def test_command_writes_a_folder_the_training_loader_reads(tmp_path, capsys):
    out = tmp_path / "synth"
    synth.main([f"out={out}", "num_clips=2", "frames=12", "height=64", "width=64", "fps=8", "seed=3"])
    assert "wrote 2 train clips" in capsys.readouterr().out
    manifest = json.loads((out / "dataset.json").read_text())
    assert [c["name"] for c in manifest["clips"]] == [p.stem for p in sorted((out / "videos").iterdir())]
    first = manifest["clips"][0]
    record = json.loads((out / "keypoints" / f"{first['name']}.json").read_text())
    expected = make_clip(first["identity"], first["motion"], first["seed"], frames=12, height=64, width=64, fps=8)
    np.testing.assert_allclose(record["keypoints"], expected.keypoints, atol=1e-3)  # stored rounded to 1e-3 px
    np.testing.assert_array_equal(np.load(out / "masks" / f"{first['name']}.npz")["masks"], expected.masks)

    cfg = DataConfig(format="pairs", root=str(out), height=64, width=64, sample_n_frames=4, interval_frame=2,
                     batch_size=2, workers=0)
    assert len(check_data(cfg)) == 2
    with TrainingDataLoader(cfg) as loader:
        batch = next(loader)
    assert batch["frames"].shape == batch["poses"].shape == (2, 4, 64, 64, 3)
    assert batch["frames"].min() >= -1 and batch["frames"].max() <= 1 and batch["frames"].std() > 0.05
    assert batch["poses"].max() > 0.3  # the skeleton is drawn
    assert not loader.skipped


def test_frame_arrays_hold_the_rendered_frames_and_train_without_ffmpeg(tmp_path, monkeypatch):
    """video_format=npy: the frames and pose frames exactly as rendered, read by the loader with
    neither ffmpeg writing nor ffmpeg reading."""
    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg was called for frame arrays")

    monkeypatch.setattr("controlnext_jax.synthetic.dataset.write_video", no_ffmpeg)
    for name in ("probe_video", "count_frames", "decode_frames"):
        monkeypatch.setattr(f"controlnext_jax.training.data_clip.{name}", no_ffmpeg)
    out = tmp_path / "synth"
    synth.main([f"out={out}", "num_clips=2", "frames=12", "height=64", "width=48", "fps=8", "seed=3",
                "video_format=npy"])
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["video_format"] == "npy"
    first = manifest["clips"][0]
    expected = make_clip(first["identity"], first["motion"], first["seed"], frames=12, height=64, width=48, fps=8)
    np.testing.assert_array_equal(np.load(out / "videos" / f"{first['name']}.npy"), expected.frames)
    np.testing.assert_array_equal(np.load(out / "poses" / f"{first['name']}.npy"), expected.pose_frames)
    cfg = DataConfig(format="pairs", root=str(out), height=64, width=48, sample_n_frames=4, interval_frame=2,
                     batch_size=2, workers=0, figure_weight=1.0)
    with TrainingDataLoader(cfg) as loader:
        batch = next(loader)
    assert batch["frames"].shape == (2, 4, 64, 48, 3) and batch["figure_weight"].max() > 1.5
    assert not loader.skipped


@pytest.mark.parametrize("argv, fragment", [
    (["split=test"], "split='test': allowed values are train, heldout"),
    (["num_clips=0"], "num_clips=0"),
    (["height=8"], "height=8"),
    (["fps=0"], "fps=0"),
    (["frames=2.5"], "frames=2.5"),
    (["colour=red"], "unknown parameter 'colour'"),
    (["video_format=avi"], "video_format='avi': allowed values are mp4, npy"),
    (["layout=eval", "video_format=npy"], "video_format=npy: layout=eval writes mp4 videos"),
])
def test_command_bad_input_is_one_line(tmp_path, capsys, argv, fragment):
    out = tmp_path / "synth"
    with pytest.raises(SystemExit) as exit_info:
        synth.main([f"out={out}", "num_clips=1", "frames=4", "height=32", "width=32", *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("controlnext-synth: error: ") and fragment in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_command_refuses_an_existing_output(tmp_path, capsys):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        synth.main([f"out={out}", "num_clips=1", "frames=4", "height=32", "width=32"])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
