"""The training data loader on small synthetic data written on the fly.

Every video frame encodes what the test needs to read back after the loader's crop and
resize: green is the source frame index (8 * index + 4, so mp4's few levels of error
cannot move it to a neighbour), red a horizontal ramp (where the crop lies and how wide it
is), blue the video (a per-video level). Pose videos carry the same index in green, so the
test sees which pose frame was taken. Hand boxes are written in the release's per-frame
meta format, on even frames only, so the weight also shows which meta entry was used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import numpy as np
import pytest

from controlnext_jax.errors import UserError
from controlnext_jax.pose.media import write_video
from controlnext_jax.training.data import DataConfig, TrainingDataLoader, check_data
from controlnext_jax.training.data_clip import choose_crop, choose_frames
from controlnext_jax.training.frame_array import write_frame_array

VH, VW = 96, 128  # the synthetic videos (landscape: the square target crops their width)
SIZE = 48  # training height and width: a crop 96 wide, resized by 1/2
N, INTERVAL = 4, 3
LENGTH = 24
RAMP = 255.0 / (VW - 1)  # red levels per source column
LEVEL_TOL = 3.5  # mp4 (crf 18, flat colours) moves a level by ~2; levels are 8 apart
# per-frame meta: a confident hand (mean score 0.9) high up, a doubtful one (0.3) low down
CONFIDENT = [[0.45, 0.1], [0.55, 0.4]]  # rows 9..38 (+-10 margin), columns 57..70 (+-10)
DOUBTFUL = [[0.45, 0.75], [0.55, 0.9]]  # rows 72..86 (+-10): output rows >= 31 keep weight 1


def _frame(index: int, video: int, rng, pose: bool = False, hw=(VH, VW)) -> np.ndarray:
    h, w = hw
    x = np.arange(w) * (VW - 1) / (w - 1)  # the same ramp whatever the file's width
    out = np.empty((h, w, 3), np.float64)
    out[..., 0] = (VW - 1 - x) * RAMP if pose else x * RAMP
    out[..., 1] = 8 * index + 4
    out[..., 2] = 40 + 50 * video + rng.uniform(-2, 2)  # a little flicker: fresh content, same level
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _write_pair(folder, name, video, length=LENGTH, pose_hw=(VH, VW), seed=0):
    rng = np.random.default_rng(seed + 100 * video)
    write_video(folder / "videos" / name, (_frame(i, video, rng) for i in range(length)), fps=8)
    write_video(folder / "poses" / name, (_frame(i, video, rng, True, pose_hw) for i in range(length)), fps=8)


def _meta(path, length=LENGTH):
    frames = []
    for i in range(length):
        entry = {"boxes": [[[0.2, 0.2], [0.7, 0.95]]]}
        if i % 2 == 0:
            entry["hands_boxes"] = [CONFIDENT, DOUBTFUL]
            entry["hands_score"] = [[0.85, 0.95, 0.9], [0.2, 0.4, 0.3]]
        frames.append(entry)
    path.write_text(json.dumps(frames))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three good videos (one shorter: 8 frames) with poses and meta, a meta_info.json with
    relative paths, and bad files: missing, random bytes, too short."""
    root = tmp_path_factory.mktemp("data")
    for sub in ("videos", "poses", "meta"):
        (root / sub).mkdir()
    for k in range(3):
        _write_pair(root, f"v{k}.mp4", k, length=8 if k == 2 else LENGTH)
        _meta(root / "meta" / f"v{k}.json", 8 if k == 2 else LENGTH)
    good = [{"video_path": f"videos/v{k}.mp4", "guide_path": f"poses/v{k}.mp4", "meta_info": f"meta/v{k}.json"}
            for k in range(2)]
    (root / "meta_info.json").write_text(json.dumps(good))
    bad_dir = root / "bad"
    for sub in ("videos", "poses"):
        (bad_dir / sub).mkdir(parents=True)
    _write_pair(bad_dir, "short.mp4", 3, length=3)
    (bad_dir / "videos" / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    return root


def _cfg(root, **kw) -> DataConfig:
    base = dict(format="meta_info", root=str(root), height=SIZE, width=SIZE, sample_n_frames=N,
                interval_frame=INTERVAL, batch_size=2, workers=0, seed=3)
    return DataConfig(**{**base, **kw})


def _take(cfg, count, position=None):
    with TrainingDataLoader(cfg, position) as loader:
        return [next(loader) for _ in range(count)], loader.state(), loader


def _index(clip_frames: np.ndarray, pose: bool = False) -> np.ndarray:
    """Source frame index of each frame (f, H, W, 3) from its green level."""
    green = clip_frames[..., 1].mean(axis=(1, 2))
    level = green * 255 if pose else (green + 1) / 2 * 255
    index = np.round((level - 4) / 8)
    assert np.all(np.abs(level - (8 * index + 4)) < LEVEL_TOL), level
    return index.astype(int)


def _video_of(clip_frames: np.ndarray) -> np.ndarray:
    level = ((clip_frames[..., 2].mean(axis=(1, 2)) + 1) / 2 * 255)
    return np.round((level - 40) / 50).astype(int)


def test_batches_have_the_release_layout(data):
    batches, _, _ = _take(_cfg(data), 3)
    reference_elsewhere = 0
    for batch in batches:
        assert set(batch) == {"frames", "poses", "hand_weight"}
        assert batch["frames"].shape == batch["poses"].shape == (2, N, SIZE, SIZE, 3)
        assert batch["hand_weight"].shape == (2, N, SIZE, SIZE)
        assert all(v.dtype == np.float32 for v in batch.values())
        # antialiased bilinear weights are convex: no overshoot beyond float rounding
        assert batch["frames"].min() >= -1 - 1e-6 and batch["frames"].max() <= 1 + 1e-6
        assert batch["poses"].min() >= -1e-6 and batch["poses"].max() <= 1 + 1e-6
        for frames, poses, weight in zip(batch["frames"], batch["poses"], batch["hand_weight"], strict=True):
            # the green levels read back as 8 i + 4 only with frames in [-1, 1] and poses in [0, 1]
            ids, pose_ids = _index(frames), _index(poses, pose=True)
            # frames 1.. are a window every INTERVAL frames; the poses are the same frames
            assert np.all(np.diff(ids[1:]) == INTERVAL), ids
            assert 0 <= ids[1] and ids[-1] < LENGTH
            np.testing.assert_array_equal(pose_ids, ids)  # frame 0: the reference's own pose
            assert len(set(_video_of(frames))) == 1  # the reference is a frame of the same video
            reference_elsewhere += ids[0] != ids[1] - INTERVAL  # not the window's own first frame
            _check_hand_weight(weight, ids)
    assert reference_elsewhere >= 3  # of 6 clips; a uniform reference is the window's start 1 time in 24


def _check_hand_weight(weight: np.ndarray, ids: np.ndarray) -> None:
    np.testing.assert_array_equal(weight[0], 1.0)  # the reference is never up-weighted
    for w, source in zip(weight[1:], ids[1:], strict=True):
        if source % 2:  # odd frames have no hand boxes in their meta
            np.testing.assert_array_equal(w, 1.0)
            continue
        # inside the confident box: 1 + 4 * 0.8 exactly (a constant region stays constant)
        np.testing.assert_allclose(w.max(), 4.2, atol=1e-5)
        np.testing.assert_allclose(w[SIZE * 2 // 3:], 1.0, atol=1e-6)  # the doubtful hand draws nothing
        np.testing.assert_allclose(w[:, :4], 1.0, atol=1e-6)  # left of the box margin whatever the crop


def test_short_videos_get_a_smaller_interval_as_in_the_release(data):
    """v2 has 8 frames: 8 // 4 = 2 < 3, so its window steps by 2 and starts at 0: frames 0, 2,
    4, 6, of which 0 is replaced by the reference."""
    cfg = _cfg(data, meta_info=None, format="pairs", batch_size=1, seed=0)
    seen = 0
    for batch in _take(cfg, 6, None)[0]:
        frames = batch["frames"][0]
        if _video_of(frames)[0] == 2:
            np.testing.assert_array_equal(_index(frames)[1:], [2, 4, 6])
            seen += 1
    assert seen == 2  # one epoch is 3 records: v2 is drawn once in each of the two epochs


def test_choose_frames_and_crop():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        ids, ref = choose_frames(50, 14, 3, rng)
        assert np.all(np.diff(ids) == 3) and ids[0] >= 0 and ids[-1] + 3 <= 50 and 0 <= ref < 50
        starts.add(int(ids[0]))
    assert starts == set(range(0, 50 - 42 + 1))  # the start is uniform over 0..L - interval * n
    with pytest.raises(ValueError):
        choose_frames(13, 14, 3, rng)
    for video_hw, target_hw in [((96, 128), (48, 48)), ((1920, 1080), (1024, 576)), ((720, 1280), (1024, 576)),
                                ((1000, 300), (64, 96))]:
        for _ in range(20):
            top, left, h, w = choose_crop(video_hw, target_hw, rng)
            assert 0 <= top and top + h <= video_hw[0] and 0 <= left and left + w <= video_hw[1]
            assert h == video_hw[0] or w == video_hw[1]  # as large as the aspect allows
            assert abs(h / w - target_hw[0] / target_hw[1]) < 1.0 / min(h, w) + 1e-9  # int() truncation


def test_the_crop_is_random_and_keeps_the_aspect(data):
    """From the red ramp: the output spans a 96-column crop (full height, square target),
    not the whole 128-column frame squeezed, at offsets inside 0..32 that vary."""
    lefts = []
    for batch in _take(_cfg(data, batch_size=1), 6)[0]:
        red = (batch["frames"][0, 1:, ..., 0].mean(axis=(0, 1)) + 1) / 2 * 255  # per output column
        span = (red[-8:].mean() - red[:8].mean()) / RAMP  # source columns between the two ends' centres
        assert abs(span - (SIZE - 8) * 96 / SIZE) < 2.0, span  # 80 for a 96-wide crop (107 if squeezed)
        left = red[:8].mean() / RAMP - 7.5  # output column j samples source column left + 2 j + 0.5
        assert -1.5 < left < VW - 96 + 1.5, left
        lefts.append(left)
    assert np.ptp(lefts) > 4  # the offset is drawn per clip


def test_same_seed_same_batches_other_seed_other_clips(data, tmp_path):
    first, _, _ = _take(_cfg(data), 2)
    again, _, _ = _take(_cfg(data), 2)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # one record, so the shuffle cannot make the difference: the seed must reach the clip's draws
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"video_path": str(data / "videos" / "v0.mp4"),
                                "guide_path": str(data / "poses" / "v0.mp4")}]))
    seeds = [_take(_cfg(data, meta_info=str(one), batch_size=3, seed=s), 1)[0][0]["frames"] for s in (3, 4)]
    assert not np.array_equal(*seeds)


def test_resuming_from_a_saved_position_continues_the_stream(data):
    cfg = _cfg(data, batch_size=1)
    straight, _, _ = _take(cfg, 5)  # past one epoch (2 records)
    _, state, _ = _take(cfg, 2)
    state = json.loads(json.dumps(state))  # what a checkpoint stores
    resumed, end, _ = _take(cfg, 3, position=state)
    for a, b in zip(straight[2:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert end["batches"] == 5
    with pytest.raises(UserError, match="seed"):
        TrainingDataLoader(_cfg(data, seed=9), position=state)


def test_background_workers_give_the_same_stream(data):
    cfg = _cfg(data, batch_size=1)
    local, _, _ = _take(cfg, 4)
    _, state, _ = _take(cfg, 1)
    remote, _, _ = _take(dataclasses.replace(cfg, workers=2), 3, position=state)
    for a, b in zip(local[1:], remote, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_pairs_format_with_pose_videos_of_another_size(tmp_path):
    for sub in ("videos", "poses"):
        (tmp_path / sub).mkdir()
    _write_pair(tmp_path, "a.mp4", 1, pose_hw=(48, 64), seed=5)
    cfg = DataConfig(format="pairs", root=str(tmp_path), height=SIZE, width=SIZE, sample_n_frames=N,
                     interval_frame=INTERVAL, workers=0, seed=1)
    (batch,), _, _ = _take(cfg, 1)
    assert set(batch) == {"frames", "poses"}  # no hand boxes: no weight
    ids = _index(batch["frames"][0])
    np.testing.assert_array_equal(_index(batch["poses"][0], pose=True), ids)
    # the pose, drawn at half size, is cropped at the same place: its reversed ramp mirrors the video's
    video_red = (batch["frames"][0, ..., 0] + 1) / 2 * 255
    pose_red = batch["poses"][0, ..., 0] * 255
    np.testing.assert_allclose((video_red + pose_red).mean(), 255, atol=3)
    assert np.abs(video_red + pose_red - 255).mean() < 6  # half-size pose: coarser, still aligned


def _array_pair(root, name, video, length=LENGTH, seed=0):
    """The frames `_write_pair` encodes, as frame arrays; returned as (frames, poses) uint8."""
    for sub in ("videos", "poses"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 100 * video)
    frames = np.stack([_frame(i, video, rng) for i in range(length)])
    poses = np.stack([_frame(i, video, rng, True) for i in range(length)])
    write_frame_array(root / "videos" / f"{name}.npy", frames)
    write_frame_array(root / "poses" / f"{name}.npy", poses)
    return frames, poses


def test_frame_arrays_load_like_their_videos_and_never_call_ffmpeg(tmp_path, monkeypatch):
    """The same frames as frame arrays and as mp4: the same draws give the same clips, exact for
    the arrays (lossless) and within mp4's error for the videos; the arrays need no ffmpeg."""
    cfg = dict(format="pairs", height=SIZE, width=SIZE, sample_n_frames=N, interval_frame=INTERVAL, batch_size=2,
               workers=0, seed=4)
    for sub in ("videos", "poses"):
        (tmp_path / "mp4" / sub).mkdir(parents=True)
    for k in range(2):
        _write_pair(tmp_path / "mp4", f"v{k}.mp4", k)
        _array_pair(tmp_path / "npy", f"v{k}", k)
    from_videos, _, _ = _take(DataConfig(root=str(tmp_path / "mp4"), **cfg), 3)

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg was called for a frame array")

    for name in ("probe_video", "count_frames", "decode_frames"):
        monkeypatch.setattr(f"controlnext_jax.training.data_clip.{name}", no_ffmpeg)
    from_arrays, state, loader = _take(DataConfig(root=str(tmp_path / "npy"), **cfg), 3)
    assert not loader.skipped and state["records"] == 2
    for a, v in zip(from_arrays, from_videos, strict=True):
        for key in ("frames", "poses"):
            assert a[key].shape == v[key].shape == (2, N, SIZE, SIZE, 3)
            # mp4 (crf 18, chroma subsampled) moves a level by about 2 of 255, a few pixels by 4: each
            # frame's channel means within LEVEL_TOL, the pixels within half of it on average (1.3 seen)
            scale = 255 / 2 if key == "frames" else 255
            np.testing.assert_allclose(a[key].mean((2, 3)) * scale, v[key].mean((2, 3)) * scale, atol=LEVEL_TOL)
            assert np.abs(a[key] - v[key]).mean() * scale < LEVEL_TOL / 2
        for clip in a["frames"]:
            ids = _index(clip)
            assert np.all(np.diff(ids[1:]) == INTERVAL)
            # lossless: the green level is exactly 8 i + 4 after an exact-size resize of a flat colour
            assert np.abs((clip[..., 1] + 1) / 2 * 255 - (8 * ids + 4)[:, None, None]).max() < 1e-3


def test_validation_video_inputs_come_from_frame_arrays(tmp_path):
    """controlnext-train's default validation inputs (frame 0 of the first training clip and its pose
    frames) read from frame arrays as from videos."""
    from controlnext_jax.pose.video import prepare_reference
    from controlnext_jax.training.validation_video import ValidationVideo

    frames, poses = _array_pair(tmp_path, "a", 1)
    record = check_data(DataConfig(format="pairs", root=str(tmp_path)))[0]
    video = ValidationVideo(tmp_path / "run", image=None, pose_video=None, first_record=record, height=SIZE,
                            width=SIZE, frames=3, num_inference_steps=2, guidance_scale=2.0, scheduler=None)
    np.testing.assert_array_equal(video.image, prepare_reference(frames[0], SIZE, SIZE))
    np.testing.assert_array_equal(video.poses, np.stack([prepare_reference(p, SIZE, SIZE) for p in poses[:3]]))


@pytest.mark.parametrize("write, reason", [
    (lambda p: np.save(p, np.empty((LENGTH, VH, VW, 3), object), allow_pickle=True), "not a frame array"),
    (lambda p: np.save(p, np.zeros((LENGTH, VH, VW, 3), np.float32)), "holds a float32 array"),
    (lambda p: np.save(p, np.zeros((LENGTH, VH, VW), np.uint8)), r"shape \(24, 96, 128\)"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(500)), "not a frame array"),
    (lambda p: np.save(p, np.zeros((N - 1, VH, VW, 3), np.uint8)), "too short"),
])
def test_bad_frame_arrays_are_named_and_never_unpickled(tmp_path, write, reason):
    _array_pair(tmp_path, "a", 0)
    write(tmp_path / "videos" / "a.npy")
    cfg = DataConfig(format="pairs", root=str(tmp_path), height=SIZE, width=SIZE, sample_n_frames=N,
                     interval_frame=INTERVAL, workers=0, on_bad_video="stop")
    with pytest.raises(UserError, match=rf"a\.npy: .*{reason}") as err:
        _take(cfg, 1)
    assert "\n" not in str(err.value)


def _figure_pairs(root, masks_shape=(LENGTH, VH, VW)):
    """A pairs folder with one video and figure masks: the top half of even frames, the bottom
    half of odd ones (full width, so the crop cannot move them)."""
    for sub in ("videos", "poses", "masks"):
        (root / sub).mkdir()
    _write_pair(root, "a.mp4", 1)
    masks = np.zeros(masks_shape, bool)
    half = masks_shape[1] // 2
    masks[0::2, :half] = True
    masks[1::2, half:] = True
    np.savez_compressed(root / "masks" / "a.npz", masks=masks)
    return DataConfig(format="pairs", root=str(root), height=SIZE, width=SIZE, sample_n_frames=N,
                      interval_frame=INTERVAL, workers=0, seed=1, figure_weight=3.0)


def test_figure_weight_follows_the_masks_of_the_window_frames(tmp_path):
    batches, _, _ = _take(_figure_pairs(tmp_path), 3)
    for batch in batches:
        assert set(batch) == {"frames", "poses", "figure_weight"}
        ids, weight = _index(batch["frames"][0]), batch["figure_weight"][0]
        assert weight.shape == (N, SIZE, SIZE) and weight.dtype == np.float32
        np.testing.assert_array_equal(weight[0], 1.0)  # the reference slot is never up-weighted
        for w, source in zip(weight[1:], ids[1:], strict=True):
            inside, outside = (w[:SIZE // 2 - 2], w[SIZE // 2 + 2:])[::1 if source % 2 == 0 else -1]
            np.testing.assert_allclose(inside, 4.0, atol=1e-5)  # 1 + 3 inside the figure
            np.testing.assert_allclose(outside, 1.0, atol=1e-6)


@pytest.mark.parametrize("edit, match", [
    (dict(figure_weight=-1.0), r"figure_weight=-1\.0: must be a number from 0"),
    (dict(figure_weight=True), r"figure_weight=True: must be a number"),
    (dict(format="meta_info"), r"figure_weight=3\.0: needs format=pairs"),
])
def test_figure_weight_settings_are_checked(tmp_path, edit, match):
    cfg = dataclasses.replace(_figure_pairs(tmp_path), **edit)
    with pytest.raises(UserError, match=match):
        check_data(cfg)


def test_figure_weight_needs_every_mask_and_names_a_wrong_one(tmp_path):
    cfg = _figure_pairs(tmp_path, masks_shape=(LENGTH, VH, VW - 8))
    with pytest.raises(UserError, match=r"a\.npz: masks of shape \(24, 96, 120\), its video needs \(24, 96, 128\)"):
        _take(dataclasses.replace(cfg, on_bad_video="stop"), 1)
    (tmp_path / "masks" / "a.npz").unlink()
    with pytest.raises(UserError, match=r"figure_weight=3\.0: needs the figure masks of every video.*1 of 1"):
        check_data(cfg)
    assert check_data(dataclasses.replace(cfg, figure_weight=0.0))[0].mask is None  # off: masks not needed


def _bad_meta_info(data, tmp_path, names):
    entries = [{"video_path": str(data / "videos" / "v0.mp4"), "guide_path": str(data / "poses" / "v0.mp4")}]
    entries += [{"video_path": str(data / "bad" / "videos" / n), "guide_path": str(data / "bad" / "poses" / n)}
                for n in names]
    path = tmp_path / "meta_info.json"
    path.write_text(json.dumps(entries))
    return path


def test_bad_videos_are_skipped_counted_and_named(data, tmp_path, caplog):
    path = _bad_meta_info(data, tmp_path, ["missing.mp4", "corrupt.mp4", "short.mp4"])
    cfg = _cfg(data, meta_info=str(path), batch_size=2, hand_weight=False)
    with caplog.at_level(logging.WARNING, logger="controlnext_jax.training.data"):
        batches, state, loader = _take(cfg, 4)  # two epochs of 4 records: every bad one drawn twice
    assert all(b["frames"].shape[0] == 2 for b in batches)  # always full, from the good video
    assert all(set(_video_of(b["frames"].reshape(-1, SIZE, SIZE, 3))) == {0} for b in batches)
    reasons = {str(k).split("/")[-1]: v for k, v in loader.bad_files.items()}
    assert set(reasons) == {"missing.mp4", "corrupt.mp4", "short.mp4"}
    assert "not found" in reasons["missing.mp4"] and "too short" in reasons["short.mp4"]
    assert "cannot read" in reasons["corrupt.mp4"], reasons
    assert loader.skipped == state["skipped"] >= 6
    for name in reasons:
        assert sum(name in r.getMessage() for r in caplog.records) == 1, caplog.text  # warned once per file
    _, resumed_state, _ = _take(cfg, 1, position=state)
    assert resumed_state["skipped"] >= state["skipped"]


def test_stop_on_bad_video_names_the_file(data, tmp_path):
    path = _bad_meta_info(data, tmp_path, ["corrupt.mp4"])
    with pytest.raises(UserError, match=r"corrupt\.mp4.*on_bad_video=stop"):
        _take(_cfg(data, meta_info=str(path), on_bad_video="stop", batch_size=1), 2)


def test_all_bad_is_an_error_in_the_main_process_not_a_hang(data, tmp_path):
    path = _bad_meta_info(data, tmp_path, ["missing.mp4", "short.mp4"])
    entries = json.loads(path.read_text())[1:]
    path.write_text(json.dumps(entries))
    outcome = {}

    def run():
        try:
            _take(_cfg(data, meta_info=str(path), workers=1, batch_size=1), 1)
        except Exception as e:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=90)  # a worker process starts in ~10 s on a busy 2-core machine
    assert not thread.is_alive(), "the loader hung on a data set with no usable video"
    assert isinstance(outcome.get("error"), UserError), outcome
    assert "no usable video" in str(outcome["error"]) and str(path) in str(outcome["error"])


@pytest.mark.parametrize("edit, match", [
    (lambda p: p.unlink(), "file not found"),
    (lambda p: p.write_text("[{"), "not valid JSON"),
    (lambda p: p.write_text("{}"), "JSON list"),
    (lambda p: p.write_text("[]"), "lists no video"),
    (lambda p: p.write_text('[{"video_path": "a.mp4"}]'), "entry 0 has no 'guide_path'"),
])
def test_check_data_names_the_listing_and_the_problem(tmp_path, edit, match):
    path = tmp_path / "meta_info.json"
    path.write_text('[{"video_path": "a.mp4", "guide_path": "b.mp4"}]')
    assert check_data(DataConfig(meta_info=str(path)))[0].video == str(tmp_path / "a.mp4")  # relative: its folder
    edit(path)
    with pytest.raises(UserError, match=match) as err:
        check_data(DataConfig(meta_info=str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_check_data_refuses_bad_settings_and_folders(tmp_path):
    path = tmp_path / "meta_info.json"
    path.write_text('[{"video_path": "a.mp4", "guide_path": "b.mp4"}]')
    for kw, match in [({"format": "csv"}, "format='csv'"), ({"height": 100}, "height=100: must be a multiple of 8"),
                      ({"width": 4}, "width=4"), ({"on_bad_video": "ignore"}, "on_bad_video"),
                      ({"sample_n_frames": 0}, "sample_n_frames")]:
        with pytest.raises(UserError, match=match):
            check_data(DataConfig(meta_info=str(path), **kw))
    with pytest.raises(UserError, match="folder not found"):
        check_data(DataConfig(format="pairs", root=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="no videos/ folder"):
        check_data(DataConfig(format="pairs", root=str(tmp_path)))
    (tmp_path / "videos").mkdir()
    (tmp_path / "poses").mkdir()
    with pytest.raises(UserError, match="lists no video"):
        check_data(DataConfig(format="pairs", root=str(tmp_path)))
