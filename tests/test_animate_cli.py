"""controlnext-animate end to end on a tiny converted checkpoint, and every bad input.

The driving clip is real footage of a person (scikit-image's astronaut photograph moved
across the frame, as the pose tests use), so MediaPipe finds a pose in every frame and the
whole path runs: detection, alignment, drawing, the compiled sampler, decoding, encoding.
Every run shares one JAX compilation cache, so the program is compiled once for the module.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import imageio.v2 as iio
import numpy as np
import pytest
from skimage import data as skimage_data

from controlnext_jax.commands import animate
from controlnext_jax.pose.media import ffmpeg_exe, probe_video, read_video
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

SIZE = 64
FRAMES = 4  # reference pose + 3 driving frames
COMMON = [f"height={SIZE}", f"width={SIZE}", "num_inference_steps=2", "batch_frames=3", "overlap=1",
          f"max_frame_num={FRAMES}", "sample_stride=2", "fps=5", "progress=false"]


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    _, converted = build_random_release(tmp_path_factory.mktemp("animate_ckpt"), model_configs("tiny"), seed=3)
    return Path(converted)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("animate_media")
    astro = skimage_data.astronaut()
    frames = [cv2.warpAffine(astro, np.float32([[0.9, 0, 6 * t], [0, 0.9, 10]]), (256, 256),
                             borderValue=(40, 40, 40)) for t in range(8)]
    iio.mimwrite(d / "dance.mp4", frames, fps=10, macro_block_size=1)
    iio.imwrite(d / "ref.png", astro[:, 64:448])
    iio.imwrite(d / "grey.png", np.full((120, 90, 3), 127, np.uint8))
    (d / "notes.txt").write_text("not an image or a video")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax_cache")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controlnext_jax.commands.animate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def check_outputs(out: Path, frames: int, fps: int) -> dict:
    info = probe_video(out)
    video = read_video(out)
    assert video.shape == (frames, SIZE, SIZE, 3) and info.fps == fps
    side = read_video(out.with_name(f"{out.stem}.side_by_side.mp4"))
    assert side.shape == (frames, SIZE, 2 * SIZE, 3)
    # the right half of the side-by-side video is the result (H.264 is lossy: compare loosely)
    assert np.abs(side[:, :, SIZE:].astype(int) - video.astype(int)).mean() < 8
    sidecar = json.loads(out.with_name(f"{out.stem}.json").read_text())
    response = json.loads(out.with_name(f"{out.stem}.response.json").read_text())
    assert response["video"] == {"url": out.absolute().as_uri(), "content_type": "video/mp4",
                                 "file_name": out.name, "file_size": out.stat().st_size}
    # codec and pixel format as ffmpeg reports the stream: H.264 yuv420p plays in browsers
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert re.search(r"Video: h264\b.*\byuv420p\b", listing), listing
    return sidecar


@pytest.mark.slow
def test_animate_from_a_driving_video(ckpt, media, cache, tmp_path):
    out = tmp_path / "result.mp4"
    r = run_cli(f"ckpt={ckpt}", f"image={media / 'ref.png'}", f"video={media / 'dance.mp4'}", f"out={out}",
                "seed=11", f"compilation_cache={cache}", *COMMON, "progress=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the bar counts every window group of every step: 4 frames in windows of 3 overlapping by 1
    # are 2 windows, stacked into 1 group here or run as 2: 2 steps x groups, to 100%
    bar = re.findall(r"denoise \(2 steps x (\d) window groups\): 100%\|[^|]*\| (\d+)/(\d+)", r.stderr)
    assert bar and int(bar[-1][1]) == int(bar[-1][2]) == 2 * int(bar[-1][0]), r.stderr
    sidecar = check_outputs(out, FRAMES, 5)
    assert sidecar["seed"] == 11 and sidecar["parameters"]["overlap"] == 1 and sidecar["frames"] == FRAMES
    assert set(sidecar["timings_s"]) >= {"load_s", "pose_s", "compile_s", "denoise_decode_s"}
    assert sidecar["checkpoint_digest"]["pipeline.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "result.json", "result.mp4", "result.response.json", "result.side_by_side.mp4"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the server's access log would mix into the command's stderr
        pass


@pytest.fixture
def http_server(media):
    handler = functools.partial(QuietHandler, directory=str(media))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_animate_from_an_endpoint_request_with_urls(ckpt, media, cache, tmp_path, http_server):
    payload = {"image_url": f"{http_server}/ref.png", "video_url": (media / "dance.mp4").as_uri(),
               "height": SIZE, "width": SIZE, "num_inference_steps": 2, "batch_frames": 3, "overlap": 1,
               "max_frame_num": FRAMES, "sample_stride": 2, "fps": 5, "guidance_scale": 2.5}
    request = tmp_path / "payload.json"
    request.write_text(json.dumps(payload))
    out = tmp_path / "from_request.mp4"
    r = run_cli(f"ckpt={ckpt}", f"request={request}", f"out={out}", "seed=5", f"compilation_cache={cache}",
                "progress=false", "fps=6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sidecar = check_outputs(out, FRAMES, 6)  # the command line wins over the payload's fps
    assert sidecar["parameters"]["guidance_scale"] == 2.5 and sidecar["parameters"]["image"].startswith("http://")


def _bad(capsys, tmp_path, *args) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        animate.main(list(args))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("controlnext-animate: error: "), err
    assert snapshot(tmp_path) == before  # nothing written, nothing removed
    return err


def test_bad_parameters_fail_before_the_model_loads(ckpt, media, tmp_path, capsys):
    base = [f"ckpt={ckpt}", f"image={media / 'ref.png'}", f"video={media / 'dance.mp4'}", f"out={tmp_path / 'o.mp4'}",
            "progress=false"]
    assert "height=60" in _bad(capsys, tmp_path, *base, "height=60")
    assert "multiples of 8" in _bad(capsys, tmp_path, *base, "height=100")
    assert "guidance_scale=11" in _bad(capsys, tmp_path, *base, "guidance_scale=11")
    assert "num_inference_steps=0" in _bad(capsys, tmp_path, *base, "num_inference_steps=0")
    assert "max_frame_num" in _bad(capsys, tmp_path, *base, "max_frame_num=1001")
    assert "sample_stride" in _bad(capsys, tmp_path, *base, "sample_stride=0")
    assert "fusion='sideways'" in _bad(capsys, tmp_path, *base, "fusion=sideways")
    assert "dtype='float16'" in _bad(capsys, tmp_path, *base, "dtype=float16")
    assert "align='mirror'" in _bad(capsys, tmp_path, *base, "align=mirror")
    assert "must name an .mp4" in _bad(capsys, tmp_path, *base, f"out={tmp_path / 'o.gif'}")
    assert "exactly one of video=" in _bad(capsys, tmp_path, *base, f"pose_video={media / 'dance.mp4'}")
    assert "ckpt=" in _bad(capsys, tmp_path, f"ckpt={tmp_path / 'nowhere'}", *base[1:])


def test_bad_inputs_fail_before_the_model_loads(ckpt, media, tmp_path, capsys, http_server):
    base = [f"ckpt={ckpt}", f"out={tmp_path / 'o.mp4'}", "progress=false", *COMMON]
    video = f"video={media / 'dance.mp4'}"
    err = _bad(capsys, tmp_path, *base, f"image={media / 'missing.png'}", video)
    assert f"image={media / 'missing.png'}: file not found" in err
    assert "not an image" in _bad(capsys, tmp_path, *base, f"image={media / 'notes.txt'}", video)
    assert "cannot read it as a video" in _bad(capsys, tmp_path, *base, f"image={media / 'ref.png'}",
                                               f"video={media / 'notes.txt'}")
    assert "HTTP 404" in _bad(capsys, tmp_path, *base, f"image={http_server}/absent.png", video)
    assert "unsupported URL scheme 'ftp'" in _bad(capsys, tmp_path, *base, "image=ftp://host/ref.png", video)
    assert "no person" in _bad(capsys, tmp_path, *base, f"image={media / 'grey.png'}", video)
    # an output that is an input
    err = _bad(capsys, tmp_path, f"ckpt={ckpt}", f"image={media / 'ref.png'}", f"video={media / 'dance.mp4'}",
               f"out={media / 'dance.mp4'}", "overwrite=true")
    assert "is the input video=" in err
    request = tmp_path.parent / f"{tmp_path.name}_bad_request.json"
    request.write_text(json.dumps({"image_url": "ref.png", "video_url": "d.mp4", "strength": 1}))
    assert "unknown field 'strength'" in _bad(capsys, tmp_path, f"ckpt={ckpt}", f"request={request}",
                                              f"out={tmp_path / 'o.mp4'}")


def test_windows_that_cannot_advance_are_refused(ckpt, media, tmp_path, capsys):
    # the release crashes at overlap == batch_frames and returns NaN latents above it
    base = [f"ckpt={ckpt}", f"image={media / 'ref.png'}", f"video={media / 'dance.mp4'}", f"out={tmp_path / 'o.mp4'}",
            "progress=false", f"height={SIZE}", f"width={SIZE}", "max_frame_num=4", "sample_stride=1"]
    assert "overlap=3" in _bad(capsys, tmp_path, *base, "batch_frames=3", "overlap=3")
    assert "overlap=5" in _bad(capsys, tmp_path, *base, "batch_frames=3", "overlap=5")


EVAL_FROM_CHECKPOINT = ("controlnext_cond_scale",)  # controlnext-eval's generation.* that default to the checkpoint's


def test_every_default_is_the_endpoints():
    """The endpoint's defaults are defined once (controlnext_jax.endpoint); the YAML configs,
    which cannot import it, and the Python API must say the same."""
    import dataclasses

    from hydra import compose, initialize_config_dir

    from controlnext_jax.cli import CONFIG_DIR
    from controlnext_jax.endpoint import PARAMETERS
    from controlnext_jax.pipeline import AnimateParams

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        animate_cfg = compose("animate")
        eval_cfg = compose("eval")
        pose_cfg = compose("pose_preview")
    api = {f.name: f.default for f in dataclasses.fields(AnimateParams)}
    for name, parameter in PARAMETERS.items():
        assert animate_cfg[name] == parameter.default, name
        if name in api:
            assert api[name] == parameter.default, name
        if name in EVAL_FROM_CHECKPOINT:
            # null: the checkpoint's inference_defaults value, else the endpoint's (as animate applies them;
            # metrics.generation.control_weight, tested in test_eval_generate.py)
            assert eval_cfg.generation[name] is None, name
        elif name in eval_cfg.generation:
            assert eval_cfg.generation[name] == parameter.default, name
        if name in pose_cfg:
            assert pose_cfg[name] == parameter.default, name

