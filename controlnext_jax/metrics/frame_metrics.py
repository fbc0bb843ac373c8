"""Per-frame reconstruction metrics against ground truth: PSNR, SSIM, L1.

All on uint8 frames (t, h, w, 3) converted to float first. Some published numbers
computed L1 with uint8 arithmetic, where a - b wraps around modulo 256; here every
difference is taken in float (L1 on the [0, 1] scale, PSNR with a peak of 255).

SSIM follows scikit-image's `structural_similarity` (the usual reference): local
statistics over a 7x7 uniform window (or an 11x11 Gaussian, sigma 1.5, with
`gaussian_weights`), sample covariance (N/(N-1)), K1 0.01, K2 0.03, data range 255,
only windows fully inside the image, mean over pixels and channels.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def _check_pair(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.shape != reference.shape or generated.ndim != 4:
        raise ValueError(f"frames must be two (t, h, w, c) arrays of one shape, got {generated.shape} "
                         f"and {reference.shape}")


def psnr(generated: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(t,) PSNR in dB per frame, float64 (inf for identical frames)."""
    _check_pair(generated, reference)
    diff = generated.astype(np.float64) - reference.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse)


def l1(generated: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(t,) mean absolute difference per frame on the [0, 1] scale, computed in float."""
    _check_pair(generated, reference)
    return np.mean(np.abs(generated.astype(np.float64) - reference.astype(np.float64)), axis=(1, 2, 3)) / data_range


def _window(gaussian_weights: bool) -> np.ndarray:
    if not gaussian_weights:
        return np.full(7, 1.0 / 7.0, np.float32)
    # scipy's gaussian_filter with sigma 1.5 and skimage's truncate 3.5: radius int(3.5*1.5+0.5)=5
    x = np.arange(-5, 6, dtype=np.float64)
    w = np.exp(-0.5 * (x / 1.5) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable 2-D window average of (n, h, w, c), keeping only fully covered positions."""
    c = x.shape[-1]
    k = len(taps)
    rows = jnp.asarray(taps).reshape(k, 1, 1, 1) * jnp.ones((1, 1, 1, c))
    cols = jnp.asarray(taps).reshape(1, k, 1, 1) * jnp.ones((1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, rows, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                     precision=jax.lax.Precision.HIGHEST)
    return jax.lax.conv_general_dilated(x, cols, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                        precision=jax.lax.Precision.HIGHEST)


@partial(jax.jit, static_argnames=("gaussian_weights", "use_sample_covariance", "data_range"))
def _ssim(x: jax.Array, y: jax.Array, gaussian_weights: bool, use_sample_covariance: bool,
          data_range: float) -> jax.Array:
    taps = _window(gaussian_weights)
    # Centre both images on one shared offset: the local variances (E[x^2] - E[x]^2) lose
    # far fewer float32 digits around 0 than around 128, and SSIM's variance terms do not
    # depend on the offset (the means get it added back).
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    offset = 0.5 * (jnp.mean(x, axis=(1, 2, 3), keepdims=True) + jnp.mean(y, axis=(1, 2, 3), keepdims=True))
    xc, yc = x - offset, y - offset
    ux, uy = _filter_valid(xc, taps), _filter_valid(yc, taps)
    uxx, uyy, uxy = _filter_valid(xc * xc, taps), _filter_valid(yc * yc, taps), _filter_valid(xc * yc, taps)
    n = len(taps) ** 2
    cov_norm = n / (n - 1) if use_sample_covariance else 1.0
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    ux, uy = ux + offset, uy + offset
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def ssim(generated: np.ndarray, reference: np.ndarray, *, gaussian_weights: bool = False,
         use_sample_covariance: bool = True, data_range: float = 255.0) -> np.ndarray:
    """(t,) SSIM per frame (scikit-image semantics, channels averaged)."""
    _check_pair(generated, reference)
    size = 11 if gaussian_weights else 7
    if min(generated.shape[1:3]) < size:
        raise ValueError(f"SSIM needs frames of at least {size}x{size}, got {generated.shape[1:3]}")
    return np.asarray(_ssim(jnp.asarray(generated), jnp.asarray(reference), gaussian_weights,
                            use_sample_covariance, float(data_range)), np.float64)
