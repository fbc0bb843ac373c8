"""controlnext-pose end to end, frame selection before detection, and input errors."""

import json
import os
import subprocess
import sys

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from controlnext_jax.pose.types import Pose
from controlnext_jax.pose.video import cover_size, extract_pose_sequence, prepare_reference, write_video

FPS = 24


def write_test_video(path, frames):
    iio.mimwrite(path, frames, fps=FPS, macro_block_size=1)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A driving video (astronaut drifting, then 6 empty grey frames) and a reference."""
    import cv2

    d = tmp_path_factory.mktemp("preview")
    astro = skimage_data.astronaut()
    frames = []
    for t in range(12):
        if t < 6:
            m = np.float32([[0.9, 0, 8 * t], [0, 0.9, 10]])
            frames.append(cv2.warpAffine(astro, m, (256, 256), borderValue=(40, 40, 40)))
        else:
            frames.append(np.full((256, 256, 3), 90, np.uint8))
    video = str(d / "drive.mp4")
    write_test_video(video, frames)
    image = str(d / "ref.png")
    iio.imwrite(image, astro[:, 64:448])
    grey = str(d / "grey.png")
    iio.imwrite(grey, np.full((200, 150, 3), 127, np.uint8))
    return d, video, image, grey


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "controlnext_jax.commands.pose", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_the_aligned_pose_video_and_keypoints(media):
    d, video, image, _ = media
    out = str(d / "pose.mp4")
    r = run_cli(f"video={video}", f"image={image}", f"out={out}", "height=256", "width=192",
                "max_frame_num=5", "sample_stride=3", "progress=false")
    assert r.returncode == 0, r.stderr[-2000:]
    frames = np.stack([f for f in iio.get_reader(out)])  # list() trips on len() = inf
    # reference pose + driving frames 0, 3, 6, 9 (max_frame_num 5 includes the reference)
    assert frames.shape == (5, 256, 192, 3)
    meta = json.load(open(str(d / "pose.json")))
    assert meta["fps"] == FPS // 3 and (meta["height"], meta["width"]) == (256, 192)
    people = [len(f) for f in meta["frames"]]
    assert people == [1, 1, 1, 0, 0]  # grey frames give empty pose frames, no crash
    assert meta["rescale"]["frames_used"] == 2
    assert frames[0].max() > 100 and frames[1].max() > 100  # drawn poses
    assert frames[3].max() < 20 and frames[4].max() < 20  # empty (codec noise only)
    nose = Pose.from_json(meta["frames"][1]).keypoints[0, 0]
    assert 0.2 < nose[0] < 0.8 and 0.05 < nose[1] < 0.5


def test_cli_input_errors_are_clear_and_leave_nothing(media):
    d, video, image, grey = media
    out = str(d / "bad.mp4")
    r = run_cli(f"video={video}", f"image={image}", f"out={out}", "height=32")
    assert r.returncode == 2 and "height must be in [64, 1024], got 32" in r.stderr
    r = run_cli(f"video={video}", f"image={grey}", f"out={out}", "progress=false")
    assert r.returncode == 2 and "no person found in the reference image" in r.stderr
    r = run_cli(f"video={d / 'missing.mp4'}", f"image={image}", f"out={out}")
    assert r.returncode == 2 and f"video={d / 'missing.mp4'}: file not found" in r.stderr
    assert not [f for f in os.listdir(d) if f.startswith(("bad", ".bad"))]


class CountingDetector:
    """Records the frames it is given; one fixed person per frame."""

    def __init__(self):
        self.frames = []

    def detect(self, frame):
        self.frames.append(frame)
        kp = np.tile(np.linspace(0.2, 0.8, 134)[:, None], (1, 1, 2))
        return Pose(kp, np.ones((1, 134)))


@pytest.mark.parametrize("max_frame_num,stride,want", [(240, 4, [0, 4, 8, 12, 16, 20]),
                                                       (3, 2, [0, 2]), (1, 1, [])])
def test_frames_are_selected_before_detection(tmp_path, max_frame_num, stride, want):
    # frame i is a flat grey of level 10 * i, so the detected frames can be identified
    video = str(tmp_path / "levels.mp4")
    write_test_video(video, [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(24)])
    det = CountingDetector()
    seq = extract_pose_sequence(det, np.zeros((80, 60, 3), np.uint8), video, height=64,
                                width=64, max_frame_num=max_frame_num, sample_stride=stride,
                                progress=False)
    seen = [int(round(f.mean() / 10)) for f in det.frames[1:]]  # [0] is the reference
    assert seen == want
    assert len(seq.poses) == 1 + len(want) == len(det.frames)


@pytest.mark.parametrize("name,value", [("max_frame_num", 0), ("max_frame_num", 1001),
                                        ("sample_stride", 11), ("width", 2000),
                                        ("sample_stride", 2.5)])
def test_parameter_ranges(tmp_path, name, value):
    kwargs = dict(height=64, width=64, max_frame_num=2, sample_stride=1, progress=False)
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        extract_pose_sequence(CountingDetector(), np.zeros((8, 8, 3), np.uint8),
                              str(tmp_path / "none.mp4"), **kwargs)


def test_failed_write_leaves_no_file(tmp_path):
    def frames():
        yield np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("detector died")

    out = tmp_path / "pose.mp4"
    with pytest.raises(RuntimeError):
        write_video(str(out), frames(), 12.0)
    assert os.listdir(tmp_path) == []


def test_reference_is_resized_to_cover_and_centre_cropped():
    assert cover_size((512, 400), (1024, 576)) == (1024, 800)  # wide: height fits
    assert cover_size((900, 300), (1024, 576)) == (1728, 576)  # tall: width fits
    photo = skimage_data.astronaut()
    for image, hw in ((photo[:, 40:460], (1024, 576)), (photo, (320, 192)),
                      (photo[100:, :500], (200, 288)), (photo[:, :300], (1000, 64))):
        ours = prepare_reference(image, *hw)
        assert ours.shape == (*hw, 3)
        # torchvision's bilinear resize of a uint8 tensor without antialiasing is torch's
        # interpolate; then the centre crop (offsets rounded)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        rh, rw = cover_size(image.shape[:2], hw)
        big = torch.nn.functional.interpolate(t, size=(rh, rw), mode="bilinear",
                                              align_corners=False, antialias=False)
        top, left = int(round((rh - hw[0]) / 2.0)), int(round((rw - hw[1]) / 2.0))
        want = big[0, :, top:top + hw[0], left:left + hw[1]].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, want)  # bit for bit, up- and downscaling
