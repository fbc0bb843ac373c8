"""Media inputs of the pose tools: images (EXIF orientation, size limit, any PIL format,
damaged files), videos (unreadable, truncated, damaged), the pose video's writer (a failed
encode is an error), and what controlnext-pose prints (one error line, no third-party noise,
a warning when nobody is found)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from controlnext_jax.errors import UserError
from controlnext_jax.pose.media import (
    MAX_IMAGE_PIXELS,
    decode_frames,
    ffmpeg_reason,
    load_image,
    probe_video,
    read_video,
    sampled_frames,
    write_video,
)
from controlnext_jax.pose.mediapipe_holistic import MediaPipeHolisticDetector

ORIENTATION = 0x0112  # the EXIF tag


def _noise_video(path, frames=40, size=64, **kw):
    rng = np.random.default_rng(0)
    iio.imwrite(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), plugin="FFMPEG", fps=10, **kw)
    return path


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (PIL checks the size on open, before decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _one_line_naming(err: UserError, *names) -> str:
    message = str(err)
    assert "\n" not in message and "ffmpeg version" not in message and "configuration:" not in message, message
    for name in names:
        assert str(name) in message, message
    return message


# ------------------------------------------------------------------------------ images
@pytest.mark.parametrize("orientation,undo", [(6, lambda a: np.rot90(a, 1)), (8, lambda a: np.rot90(a, -1)),
                                              (3, lambda a: np.rot90(a, 2)), (1, lambda a: a)])
def test_exif_orientation_is_applied(tmp_path, orientation, undo):
    upright = skimage_data.astronaut()[:, 100:400]  # portrait 512 x 300
    stored = undo(upright)  # what a phone writes: the sensor's pixels plus the tag
    im = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    im.save(tmp_path / "phone.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "phone.png"), upright)


def test_sideways_phone_portrait_is_detected_upright(tmp_path):
    upright = skimage_data.astronaut()
    im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # stored sideways, tagged 6
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with MediaPipeHolisticDetector() as detector:
        pose = detector.detect(load_image(tmp_path / "phone.jpg"))
    kp = pose.keypoints[0]
    assert pose.num_people == 1
    assert kp[0, 1] < kp[1, 1] and kp[14, 1] < kp[2, 1]  # nose above the neck, eyes above the shoulders
    assert abs(kp[2, 1] - kp[5, 1]) < 0.1  # shoulders level: upright, not on its side


@pytest.mark.parametrize("suffix,kw", [(".jpg", {"quality": 95}), (".webp", {"lossless": True}), (".bmp", {}),
                                       (".tif", {}), (".gif", {})])
def test_any_pil_format(tmp_path, suffix, kw):
    image = skimage_data.astronaut()[::4, ::4]
    Image.fromarray(image).save(tmp_path / f"ref{suffix}", **kw)
    out = load_image(tmp_path / f"ref{suffix}")
    assert out.shape == image.shape and out.dtype == np.uint8
    tolerance = {".jpg": 12, ".gif": 60}.get(suffix, 0)
    assert np.abs(out.astype(int) - image).mean() <= tolerance


def test_modes_become_rgb(tmp_path):
    grey16 = (np.arange(64 * 48).reshape(64, 48) * 21).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    out = load_image(tmp_path / "grey16.png")
    assert out.shape == (64, 48, 3)
    np.testing.assert_array_equal(out[..., 0], np.round(grey16 / 257).astype(np.uint8))  # scaled, not clipped
    rgba = np.dstack([skimage_data.astronaut()[:32, :32], np.full((32, 32), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])


@pytest.mark.parametrize("width,height", [(14000, 14000), (9000, 9000)])
def test_too_large_image_is_refused_before_decoding(tmp_path, width, height):
    # 14000^2 is past PIL's own bomb limit (DecompressionBombError), 9000^2 past ours only
    assert width * height > MAX_IMAGE_PIXELS
    path = _png_header_only(tmp_path / "huge.png", width, height)
    with pytest.raises(UserError) as e:
        load_image(path)
    _one_line_naming(e.value, f"image={path}", f"{MAX_IMAGE_PIXELS:,} pixels")


def test_damaged_images(tmp_path):
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name, reason in (("cut.png", "cannot read the image"), ("text.png", "not an image file"),
                         ("missing.png", "file not found")):
        with pytest.raises(UserError) as e:
            load_image(tmp_path / name, param="image")
        _one_line_naming(e.value, f"image={tmp_path / name}", reason)
    with pytest.raises(UserError, match="not a file"):
        load_image(tmp_path)


# ------------------------------------------------------------------------------ videos
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    good = _noise_video(d / "good.mp4", output_params=["-movflags", "+faststart"])  # index first, data after
    data = good.read_bytes()
    (d / "cut_end.mp4").write_bytes(data[: len(data) // 2])  # index intact, data cut short
    _noise_video(d / "moov_last.mp4")
    (d / "cut_start.mp4").write_bytes((d / "moov_last.mp4").read_bytes()[:5000])  # no index at all
    (d / "damaged.mp4").write_bytes(data[:3000] + bytes(len(data) // 3) + data[3000 + len(data) // 3:])
    (d / "text.mp4").write_text("not a video")
    (d / "empty.mp4").write_bytes(b"")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=1",
                    str(d / "audio.mp4")], check=True)
    return d


def test_good_video_reads_every_frame(videos):
    info = probe_video(videos / "good.mp4")
    assert (info.height, info.width, info.fps, info.num_frames) == (64, 64, 10.0, 40)
    frames = read_video(videos / "good.mp4")
    assert frames.shape == (40, 64, 64, 3)
    assert len(list(sampled_frames(videos / "good.mp4", 3, 100))) == 14
    np.testing.assert_array_equal(np.stack(list(sampled_frames(videos / "good.mp4", 3, 5, start=2))),
                                  frames[2:15:3])


@pytest.mark.parametrize("name,reason", [("cut_end.mp4", "truncated"), ("damaged.mp4", "damaged"),
                                         ("cut_start.mp4", "moov atom not found"), ("text.mp4", "cannot read it"),
                                         ("empty.mp4", "cannot read it"), ("missing.mp4", "file not found"),
                                         ("audio.mp4", "the file has no video stream")])
def test_bad_videos_are_one_user_error_line(videos, name, reason):
    with pytest.raises(UserError) as e:
        read_video(videos / name, param="dataset.root")
    _one_line_naming(e.value, f"dataset.root={videos / name}", reason)


def test_early_stop_does_not_check_the_rest(videos):
    # a consumer that stops early never reads the cut-off part and gets no error
    assert len(list(sampled_frames(videos / "cut_end.mp4", 1, 3))) == 3
    frames = decode_frames(videos / "cut_end.mp4")
    next(frames)
    frames.close()


def test_ffmpeg_reason_drops_the_banner():
    text = ("Could not load meta information\n=== stderr ===\n\nffmpeg version n9.0 Copyright (c) 2000-2026\n"
            "  built with gcc 16.2.0\n  configuration: --prefix=/ffbuild\n  libavutil      60. 8.100\n"
            "[in#0 @ 0x5601cb284040] moov atom not found\n"
            "[in#0 @ 0x5601cb283cc0] Error opening input: Invalid data found when processing input\n"
            "Error opening input file /x/y.mp4.\nError opening input files: Invalid data found when processing input\n")
    assert ffmpeg_reason(text) == "moov atom not found (Invalid data found when processing input)"


# ----------------------------------------------------------------------------- writing
def test_written_video_round_trips(tmp_path):
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    write_video(tmp_path / "out.mp4", iter(frames), 7.0)
    back = read_video(tmp_path / "out.mp4")
    assert back.shape == (5, 48, 64, 3) and probe_video(tmp_path / "out.mp4").fps == 7.0
    assert np.abs(back.astype(int) - np.stack(frames)).max() <= 2
    write_video(tmp_path / "odd.mp4", [np.zeros((33, 45, 3), np.uint8)], 5.0)  # odd sizes: 4:4:4, not resized
    assert read_video(tmp_path / "odd.mp4").shape == (1, 33, 45, 3)


def test_encoder_killed_by_the_file_size_limit_is_an_error(tmp_path):
    """ffmpeg stopped mid-file (here by RLIMIT_FSIZE) used to leave a truncated video and
    no error (imageio's writer ignores ffmpeg's exit status)."""
    script = textwrap.dedent(f"""
        import resource, numpy as np
        from controlnext_jax.errors import UserError
        from controlnext_jax.pose.media import write_video
        resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))
        rng = np.random.default_rng(0)
        frames = (rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(40))
        try:
            write_video({str(tmp_path / 'pose.mp4')!r}, frames, 10.0)
        except UserError as e:
            print("UserError:", e)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"UserError: out={tmp_path / 'pose.mp4'}: cannot write the video"), r.stdout
    assert os.listdir(tmp_path) == []


def _fake_ffmpeg(tmp_path, message):
    """An ffmpeg that decodes as the real one but fails every encode with `message`."""
    real = imageio_ffmpeg.get_ffmpeg_exe()
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *'-i -'*) cat > /dev/null; echo '{message}' >&2; exit 1;; esac\n"
                    f"exec {real} \"$@\"\n")
    fake.chmod(0o755)
    return fake


# ------------------------------------------------------------------------------- the CLI
def run_pose(*args, env=None):
    return subprocess.run([sys.executable, "-m", "controlnext_jax.commands.pose", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    iio.imwrite(d / "ref.png", skimage_data.astronaut()[:, 64:448])
    iio.imwrite(d / "empty.mp4", np.full((6, 64, 64, 3), 90, np.uint8), plugin="FFMPEG", fps=12)
    iio.imwrite(d / "astro.mp4", np.stack([skimage_data.astronaut()[::2, ::2]] * 3), plugin="FFMPEG", fps=12)
    return d


def _listing(d):
    return sorted(os.listdir(d))


def test_cli_output_is_clean_and_nobody_found_is_a_warning(scene, tmp_path):
    out = tmp_path / "pose.mp4"
    r = run_pose(f"video={scene / 'empty.mp4'}", f"image={scene / 'ref.png'}", f"out={out}", "height=128",
                 "width=96", "progress=false")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    # no TF Lite / absl / glog lines, no JAX fork warning: only the one warning
    assert len(lines) == 1 and "nobody was found in any of the 3 driving frames" in lines[0], r.stderr
    meta = json.loads((tmp_path / "pose.json").read_text())
    assert meta["driving_frames_without_person"] == 3 and "nobody was found" in meta["warnings"][0]
    r = run_pose(f"video={scene / 'astro.mp4'}", f"image={scene / 'ref.png'}", f"out={tmp_path / 'a.mp4'}",
                 "height=128", "width=96", "progress=false")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads((tmp_path / "a.json").read_text())["warnings"] == []


def test_cli_bad_media_fail_in_one_line_and_leave_nothing(scene, videos, tmp_path):
    (tmp_path / "cut.png").write_bytes((scene / "ref.png").read_bytes()[:3000])
    _png_header_only(tmp_path / "huge.png", 14000, 14000)
    before = _listing(tmp_path)
    out = tmp_path / "pose.mp4"
    for video, image, expect in ((videos / "cut_end.mp4", scene / "ref.png", f"video={videos / 'cut_end.mp4'}: "
                                  "the video is truncated"),
                                 (videos / "text.mp4", scene / "ref.png", f"video={videos / 'text.mp4'}: cannot read"),
                                 (scene / "astro.mp4", tmp_path / "cut.png", f"image={tmp_path / 'cut.png'}: cannot "
                                  "read the image"),
                                 (scene / "astro.mp4", tmp_path / "huge.png", f"image={tmp_path / 'huge.png'}: the "
                                  "image is larger than")):
        r = run_pose(f"video={video}", f"image={image}", f"out={out}", "height=128", "width=96", "progress=false")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"controlnext-pose: error: {expect}"), r.stderr
        assert _listing(tmp_path) == before


def test_cli_full_disk_is_one_line(scene, tmp_path):
    fake = _fake_ffmpeg(tmp_path, "Error writing trailer of pose.mp4: No space left on device")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = run_pose(f"video={scene / 'astro.mp4'}", f"image={scene / 'ref.png'}", f"out={out_dir / 'pose.mp4'}",
                 "height=128", "width=96", "progress=false", env={"IMAGEIO_FFMPEG_EXE": str(fake)})
    assert r.returncode == 2
    assert r.stderr == f"controlnext-pose: error: {out_dir / 'pose.mp4'}: No space left on device\n", r.stderr
    assert os.listdir(out_dir) == []
