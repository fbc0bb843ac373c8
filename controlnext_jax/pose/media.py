"""Reading and writing the media files users give: images (PIL) and videos (ffmpeg).

Every reader turns a file it cannot use into one `UserError` line that names the
parameter, the file and ffmpeg's or PIL's reason, without ffmpeg's version banner:

- images are read with their EXIF orientation applied (a phone portrait stored
  sideways with an orientation tag comes out upright), in any format PIL reads, and
  refused above `MAX_IMAGE_PIXELS` before they are decoded;
- videos are decoded by the ffmpeg binary of imageio-ffmpeg, run directly so that its
  error output and exit status can be checked: an unreadable file, a truncated one
  (ffmpeg's "partial file") and one with packets that fail to decode are refused
  instead of giving fewer or shifted frames;
- the pose video is encoded the same way and a failed encode is an error (imageio's
  writer ignores ffmpeg's exit status, so a full disk gave a truncated file and no
  error): `OSError` with the output's name for the environment's errors (full disk,
  read-only, no permission), which the command line reports as one line, else a
  `UserError`.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from controlnext_jax.atomic_io import atomic_file
from controlnext_jax.errors import UserError

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp unless this is set: Python code
# between fork and exec, which deadlocks the child when another thread (JAX, orbax, wandb)
# holds a lock at the fork (imageio-ffmpeg issue 58; seen here as a training run that hung
# while probing a video). Without it ffmpeg stays in our process group, so Ctrl-C reaches it
# too, which is what an interrupted read wants anyway.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

# Larger images are refused before decoding: 64 megapixels (8000 x 8000) holds any
# phone or camera photo; the reference is resized to at most 1024 px anyway.
MAX_IMAGE_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# ffmpeg's messages for packets it could not use: the file is cut short or damaged.
_DAMAGE = re.compile(r"partial file|Decoding error|Error submitting packet to decoder|"
                     r"Error while decoding|corrupt decoded frame", re.I)
# Failed writes whose reason is the environment's: reported as OSError with the file.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                 errno.ENOTDIR, errno.ENOENT)
_LOG_LIMIT = 1 << 16  # bytes of ffmpeg's error output kept


# ------------------------------------------------------------------------------- images
def load_image(path: str | Path, param: str = "image") -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, upright as its EXIF orientation says."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = str(path)
    if not os.path.exists(path):
        raise UserError(f"{param}={path}: file not found")
    if not os.path.isfile(path):
        raise UserError(f"{param}={path}: not a file")
    too_big = (f"{param}={path}: the image is larger than the limit of {MAX_IMAGE_PIXELS:,} pixels "
               f"(controlnext_jax.pose.media.MAX_IMAGE_PIXELS); give a smaller image")
    try:
        with warnings.catch_warnings():
            # PIL warns, and past twice its own limit refuses, while opening: both mean too big
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise UserError(f"{too_big} ({im.width} x {im.height})")
                im = ImageOps.exif_transpose(im)  # loads the pixels
                return _rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(too_big) from None
    except UnidentifiedImageError:
        raise UserError(f"{param}={path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or damaged data
        if isinstance(e, UserError):
            raise
        raise UserError(f"{param}={path}: cannot read the image ({_first_line(e)})") from None


def _rgb(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale, convert() would clip
        grey = np.round(np.asarray(im, np.float64) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), np.uint8))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------------------------------- videos
def ffmpeg_reason(text: str) -> str:
    """The meaningful part of ffmpeg's error output: the version banner, build
    configuration, library versions and the input's description (indented lines) dropped,
    '[demuxer @ 0x...]' prefixes removed, the most specific message first and the generic
    one after it."""
    if "Input #" in text and " Video: " not in text:
        return "the file has no video stream"
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if (not line or raw[:1].isspace() or line.startswith(("ffmpeg version", "Input #", "Output #", "=== "))
                or "Could not load meta information" in line or "misdetection possible" in line
                or line.startswith(("Error opening input file ", "Error opening output file ", "Last message repeated"))):
            continue
        line = re.sub(r"^(\[[^\]]* @ 0x[0-9a-f]+\]\s*)+", "", line)
        if line not in lines:
            lines.append(line)
    if not lines:
        return "ffmpeg gave no reason"
    specific = [line for line in lines if not line.lower().startswith("error")]
    generic = lines[-1].split(": ", 1)[-1] if lines[-1].lower().startswith("error") else ""
    first = specific[0] if specific else lines[-1]
    return f"{first} ({generic})" if generic and generic not in first else first


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    height: int
    width: int
    fps: float
    num_frames: int | None  # container's estimate; None when unknown


def probe_video(path: str | Path, param: str = "video") -> VideoInfo:
    """Size, frame rate and estimated length of the first video stream."""
    import imageio_ffmpeg

    path = str(path)
    _check_file(path, param)
    frames = imageio_ffmpeg.read_frames(path)
    try:
        with warnings.catch_warnings():
            # if the user re-enabled imageio-ffmpeg's preexec_fn, the fork runs JAX's fork hook,
            # which warns; the child only execs ffmpeg.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            meta = next(frames)
    except (OSError, RuntimeError) as e:
        raise UserError(f"{param}={path}: cannot read it as a video: {ffmpeg_reason(str(e))}") from None
    except (IndexError, AttributeError, ValueError):  # ffmpeg's header had no video stream in it
        raise UserError(f"{param}={path}: has no video stream") from None
    finally:
        frames.close()
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    duration = meta.get("duration")
    # ffmpeg reports no frame count; duration * fps is a fair estimate (progress bars only)
    n = round(duration * fps) if duration and fps and math.isfinite(duration) else None
    return VideoInfo(int(h), int(w), fps, n)


def _check_file(path: str, param: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"{param}={path}: file not found")
    if not os.path.isfile(path):
        raise UserError(f"{param}={path}: not a file")


def decode_frames(path: str | Path, param: str = "video", info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Every frame of the first video stream as (H, W, 3) uint8 RGB, in order.

    Closing the generator early stops ffmpeg; only what was decoded up to there is
    checked. A file ffmpeg cannot open, one that ends early ("partial file") or has
    packets that do not decode, or one with no frame is a `UserError`."""
    path = str(path)
    info = info or probe_video(path, param)
    frame_bytes = info.height * info.width * 3
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-map", "0:v:0",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    with tempfile.TemporaryFile() as log:
        # its own process group: Ctrl-C reaches Python, which stops ffmpeg in `finally`
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                process_group=0)
        count, finished = 0, False
        try:
            while True:
                data = proc.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    break
                count += 1
                yield np.frombuffer(data, np.uint8).reshape(info.height, info.width, 3)
            status = proc.wait()
            finished = True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        log.seek(0)
        text = log.read(_LOG_LIMIT).decode(errors="replace")
    if finished:
        _check_decode(path, param, status, text, count, partial=len(data))


def _check_decode(path: str, param: str, status: int, text: str, count: int, partial: int) -> None:
    damage = [line for line in text.splitlines() if _DAMAGE.search(line)]
    if status != 0:
        raise UserError(f"{param}={path}: cannot read it as a video: {ffmpeg_reason(text)}")
    if damage:
        how = "truncated" if any("partial file" in line for line in damage) else "damaged"
        raise UserError(f"{param}={path}: the video is {how}: {ffmpeg_reason(damage[0])} ({len(damage)} "
                        f"such errors in the {count} frames decoded); re-encode or replace the file")
    if partial:
        raise UserError(f"{param}={path}: the video is truncated: its last frame is incomplete")
    if count == 0:
        raise UserError(f"{param}={path}: the video has no frames")


def read_video(path: str | Path, param: str = "video") -> np.ndarray:
    """(t, h, w, 3) uint8: every frame of a video file."""
    return np.stack(list(decode_frames(path, param)))


def sampled_frames(path: str | Path, sample_stride: int, limit: int, param: str = "video",
                   info: VideoInfo | None = None, start: int = 0) -> Iterator[np.ndarray]:
    """Frames start, start + stride, start + 2*stride, ... of the video, at most `limit` of them.

    Every frame up to the last kept one is decoded (video decoding is sequential),
    but only the kept ones are yielded, and reading stops as soon as `limit` is met."""
    if limit <= 0:
        return
    frames = decode_frames(path, param, info)
    try:
        kept = 0
        for index, frame in enumerate(frames):
            if index < start or (index - start) % sample_stride:
                continue
            yield frame
            kept += 1
            if kept >= limit:
                break
    finally:
        frames.close()


# ------------------------------------------------------------------------------ writing
def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, param: str = "out") -> None:
    """(H, W, 3) uint8 RGB frames -> H.264 video at `path`, all or nothing."""
    with atomic_file(path, param=param) as tmp:
        encode_video(str(tmp), Path(path).absolute(), frames, fps, param)


def encode_video(tmp: str, final: Path, frames: Iterable[np.ndarray], fps: float, param: str) -> None:
    """Encode (H, W, 3) uint8 RGB frames into the file `tmp` (H.264, yuv420p) that the caller
    renames to `final` (named in errors) when complete: for callers that own the temporary name."""
    proc, size = None, None
    with tempfile.TemporaryFile() as log:
        try:
            for frame in frames:
                frame = np.ascontiguousarray(frame, np.uint8)
                if proc is None:
                    size = frame.shape
                    proc = _start_encoder(tmp, size, fps, log)
                if frame.shape != size or len(size) != 3 or size[2] != 3:
                    raise ValueError(f"frames must all be (H, W, 3) uint8 of one size, got {frame.shape} after {size}")
                try:
                    proc.stdin.write(frame.data)
                except BrokenPipeError:  # ffmpeg stopped: its log says why
                    break
            if proc is None:
                raise ValueError("no frames to write")
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            status = proc.wait()
        finally:
            if proc is not None and proc.poll() is None:  # already failing: stop the encoder
                proc.kill()
                proc.wait()
        if status != 0:
            log.seek(0)
            _raise_write_error(final, param, status, log.read(_LOG_LIMIT).decode(errors="replace"))


def _start_encoder(tmp: str, shape: tuple[int, ...], fps: float, log) -> subprocess.Popen:
    h, w = shape[:2]
    # 4:2:0 needs even sizes; odd ones keep full chroma instead of being resized.
    pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    rate = str(Fraction(max(float(fps), 1.0)).limit_denominator(1001))
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "-",
           "-an", "-c:v", "libx264", "-pix_fmt", pix, "-crf", "18", tmp]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, process_group=0)


def _raise_write_error(final: Path, param: str, status: int, text: str) -> None:
    for code in _WRITE_ERRNOS:
        if os.strerror(code) in text:
            raise OSError(code, os.strerror(code), str(final))
    reason = ffmpeg_reason(text) if text.strip() else (
        f"ffmpeg was stopped by signal {-status}" if status < 0 else f"ffmpeg exit status {status}")
    raise UserError(f"{param}={final}: cannot write the video: {reason}")
