"""Frechet Video Distance by the canonical google-research definition.

`frechet_video_distance.py` (google-research/google-research): uint8 videos are resized
frame by frame with TF1 `tf.image.resize_bilinear` to 224x224 (align_corners=False and
the legacy pixel mapping src = dst * in/out, no half-pixel centres), scaled to [-1, 1],
embedded with the TF-Hub I3D Kinetics-400 (400 logits averaged over time), and the two
embedding sets are compared with the Frechet distance in float64 (`frechet.py`).

Videos longer than a clip are cut into clips (`clip_starts`); the clip length, frame
stride and count go with every FVD value (`ClipSampling.describe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.metrics.frechet import frechet_distance_from_features
from controlnext_jax.metrics.i3d import INPUT_SIZE, MIN_FRAMES, InceptionI3d


@dataclass(frozen=True)
class ClipSampling:
    """Which clips of a video FVD sees: `clip_length` frames taken every `frame_stride`
    frames, clips back to back (non-overlapping) from frame 0, at most `max_clips` per
    video (0: all that fit)."""

    clip_length: int = 16
    frame_stride: int = 1
    max_clips: int = 1

    def __post_init__(self):
        if self.clip_length < MIN_FRAMES:
            raise UserError(f"fvd.clip_length={self.clip_length}: must be >= {MIN_FRAMES} (I3D's temporal pooling)")
        if self.frame_stride < 1:
            raise UserError(f"fvd.frame_stride={self.frame_stride}: must be >= 1")
        if self.max_clips < 0:
            raise UserError(f"fvd.max_clips={self.max_clips}: must be >= 0 (0 = every clip that fits)")

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers."""
        return (self.clip_length - 1) * self.frame_stride + 1

    def starts(self, num_frames: int) -> list[int]:
        starts = list(range(0, num_frames - self.span + 1, self.clip_length * self.frame_stride))
        return starts[: self.max_clips] if self.max_clips else starts

    def clips(self, video: np.ndarray) -> list[np.ndarray]:
        """(t, h, w, c) -> the sampled (clip_length, h, w, c) clips."""
        return [video[s: s + self.span: self.frame_stride] for s in self.starts(len(video))]

    def describe(self) -> str:
        count = f"at most {self.max_clips}" if self.max_clips else "all"
        return (f"clips of {self.clip_length} frames, frame stride {self.frame_stride}, {count} "
                f"non-overlapping clip(s) per video from frame 0")


def _bilinear_taps(n_in: int, n_out: int, half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for each output index, TF's resize_bilinear."""
    scale = n_in / n_out
    dst = np.arange(n_out, dtype=np.float64)
    src = np.maximum((dst + 0.5) * scale - 0.5, 0.0) if half_pixel_centers else dst * scale
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear_tf(frames: jax.Array, size: tuple[int, int], half_pixel_centers: bool = False) -> jax.Array:
    """TF `resize_bilinear` of (..., h, w, c) float frames to `size` (no antialiasing)."""
    (h_lo, h_hi, h_w), (w_lo, w_hi, w_w) = (
        _bilinear_taps(n, m, half_pixel_centers) for n, m in zip(frames.shape[-3:-1], size))
    x = frames[..., h_lo, :, :] * (1 - h_w)[:, None, None] + frames[..., h_hi, :, :] * h_w[:, None, None]
    return x[..., w_lo, :] * (1 - w_w)[:, None] + x[..., w_hi, :] * w_w[:, None]


def preprocess(videos: jax.Array, half_pixel_centers: bool = False) -> jax.Array:
    """uint8 (b, t, h, w, 3) -> float32 (b, t, 224, 224, 3) in [-1, 1] (google-research `preprocess`)."""
    resized = resize_bilinear_tf(videos.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE), half_pixel_centers)
    return 2.0 * resized / 255.0 - 1.0


class I3DEmbedder:
    """Batched, jitted I3D embedding of uint8 clips. Every call runs full batches of
    `batch_size` (the last one padded), so one clip shape compiles once."""

    def __init__(self, model: InceptionI3d, batch_size: int = 8, half_pixel_centers: bool = False):
        if batch_size < 1:
            raise UserError(f"fvd.batch_size={batch_size}: must be >= 1")
        self.batch_size = batch_size
        graphdef, self._state = nnx.split(model)

        def embed(state, clips):
            return nnx.merge(graphdef, state)(preprocess(clips, half_pixel_centers))

        self._embed = jax.jit(embed)

    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        n = len(batch)
        batch = batch + [batch[-1]] * (self.batch_size - n)
        return np.asarray(self._embed(self._state, np.stack(batch)), np.float64)[:n]

    def embed_iter(self, clips: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield the (400,) embedding of each (t, h, w, 3) uint8 clip, in order."""
        batch: list[np.ndarray] = []
        for clip in clips:
            clip = np.asarray(clip)
            if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
                raise ValueError(f"FVD clips must be uint8 (frames, height, width, 3), got {clip.dtype} {clip.shape}")
            batch.append(clip)
            if len(batch) == self.batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def __call__(self, clips: Iterable[np.ndarray]) -> np.ndarray:
        """(n, t, h, w, 3) uint8 clips -> (n, 400) float64 embeddings."""
        out = list(self.embed_iter(clips))
        return np.stack(out) if out else np.zeros((0, 400))


def fvd_from_embeddings(embeddings1, embeddings2) -> float:
    """FVD between two (n, 400) I3D embedding sets."""
    return frechet_distance_from_features(embeddings1, embeddings2)


def fvd(embedder: I3DEmbedder, videos1, videos2) -> float:
    """FVD between two sets of uint8 (n, t, h, w, 3) clips."""
    return fvd_from_embeddings(embedder(videos1), embedder(videos2))
