"""SVD's CLIP input: the reference image squashed to 224x224 and CLIP-normalised.

The SVD pipeline (`_encode_image`) takes the reference in [-1, 1], resizes it with
`_resize_with_antialiasing` (a separable Gaussian blur, sigma = max((factor - 1) / 2,
0.001) per axis, kernel size int(max(4 sigma, 3)) made odd, reflect padding, then torch
bicubic with align_corners=True and a = -0.75), maps it back to [0, 1] and lets the
CLIP feature extractor apply only the mean/std normalisation (no crop, no resize, no
rescale). The whole image is stretched to 224x224 whatever its aspect ratio.

Blur and bicubic are both linear along each axis, so each axis is one (out, in) matrix
built in float64 NumPy from the static input shape; the resize is two matmuls.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224
_CUBIC_A = -0.75  # torch's bicubic coefficient


def _gaussian_blur_matrix(length: int, sigma: float, kernel_size: int) -> np.ndarray:
    """(length, length) operator of a 1-D Gaussian blur with torch "reflect" padding."""
    x = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
    if kernel_size % 2 == 0:
        x = x + 0.5
    g = np.exp(-x**2 / (2.0 * sigma**2))
    g = g / g.sum()
    front = (kernel_size - 1) // 2
    if max(front, kernel_size - 1 - front) >= length:
        raise ValueError(f"antialiased resize: reflect padding of {kernel_size - 1 - front} needs an input "
                         f"longer than {length} pixels along this axis (torch refuses it too)")
    m = np.zeros((length, length))
    for i in range(length):
        for j, weight in enumerate(g):
            src = i + j - front
            # reflect without repeating the edge sample: -1 -> 1, length -> length - 2
            src = -src if src < 0 else (2 * (length - 1) - src if src > length - 1 else src)
            m[i, src] += weight
    return m


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    """Keys' cubic convolution weights of the samples at offsets -1, 0, 1, 2 for fraction t."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _bicubic_align_corners_matrix(length: int, out: int) -> np.ndarray:
    """(out, length) operator of torch bicubic interpolation, align_corners=True,
    out-of-range taps clamped to the border sample."""
    # source positions rounded to float32 as torch computes them for float32 images: at 1024 px
    # float32 moves a tap's fraction by up to ~3e-5; matching it takes the difference to
    # torch's output from ~1e-5 to ~3e-7 (relative)
    scale = np.float32(length - 1) / np.float32(out - 1) if out > 1 else np.float32(0.0)
    m = np.zeros((out, length))
    for o in range(out):
        src = np.float32(scale * np.float32(o))
        i0 = math.floor(src)
        for off, weight in zip((-1, 0, 1, 2), _cubic_weights(float(src - np.float32(i0)))):
            m[o, min(max(i0 + off, 0), length - 1)] += weight
    return m


@functools.lru_cache(maxsize=64)
def antialias_resize_matrix(length: int, out: int) -> np.ndarray:
    """(out, length) float64 operator of diffusers' `_resize_with_antialiasing` along one axis."""
    sigma = max((length / out - 1.0) / 2.0, 0.001)
    kernel_size = int(max(2.0 * 2 * sigma, 3))
    if kernel_size % 2 == 0:
        kernel_size += 1
    m = _bicubic_align_corners_matrix(length, out) @ _gaussian_blur_matrix(length, sigma, kernel_size)
    m.setflags(write=False)
    return m


def resize_with_antialiasing(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """diffusers' `_resize_with_antialiasing` (bicubic, align_corners=True) on channels-last
    images (n, h, w, c) -> (n, size[0], size[1], c), float32."""
    _, h, w, _ = images.shape
    mh = jnp.asarray(antialias_resize_matrix(h, size[0]), jnp.float32)
    mw = jnp.asarray(antialias_resize_matrix(w, size[1]), jnp.float32)
    x = images.astype(jnp.float32)
    # full float32 matmuls: the default TPU/GPU precision would round the image to bf16/tf32
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hi)  # (n, h, w, c) -> (n, size[0], w, c)
    return jnp.einsum("pw,nowc->nopc", mw, x, precision=hi)  # -> (n, size[0], size[1], c)


def clip_preprocess(images: jax.Array, *, image_size: int = CLIP_IMAGE_SIZE) -> jax.Array:
    """Reference images (n, h, w, 3) in [-1, 1] -> CLIP pixel_values (n, image_size, image_size, 3),
    as SVD's `_encode_image` prepares them (stretched, not cropped)."""
    x = resize_with_antialiasing(images, (image_size, image_size))
    x = (x + 1.0) / 2.0
    mean = jnp.asarray(CLIP_MEAN, jnp.float32)
    std = jnp.asarray(CLIP_STD, jnp.float32)
    return (x - mean) / std
