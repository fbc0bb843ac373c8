"""Per-frame reconstruction metrics against ground truth: PSNR, SSIM, L1.

All on uint8 frames (t, h, w, 3) converted to float first. Some published numbers
computed L1 with uint8 arithmetic, where a - b wraps around modulo 256; here every
difference is taken in float (L1 on the [0, 1] scale, PSNR with a peak of 255).

SSIM follows scikit-image's `structural_similarity` (the usual reference) step for step,
in float64 with the same scipy.ndimage filters: local statistics over a 7x7 uniform
window (or a Gaussian of sigma 1.5 truncated at 3.5 sigma, 11x11, with
`gaussian_weights`), sample covariance (N/(N-1)), K1 0.01, K2 0.03, data range 255,
only windows fully inside the image, mean over pixels, then over channels. Plane by
plane it gives scikit-image's values in about its time on the CPU, where the former
float32 JAX convolutions took 9x longer (BENCHMARKS.md).

Figure-region variants (`*_masked`) take (t, h, w) bool masks of the person: PSNR from the MSE
over the mask's pixels (all channels), L1 over the same pixels, SSIM as the mean of the SSIM map
(channels averaged) over the mask's pixels among those whose window lies inside the image. A
frame with an empty mask gives NaN; a perfect figure gives an infinite PSNR whatever the
background, which is why a figure metric says something the whole frame hides.
"""

from __future__ import annotations

import numpy as np


def _check_pair(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.shape != reference.shape or generated.ndim != 4:
        raise ValueError(f"frames must be two (t, h, w, c) arrays of one shape, got {generated.shape} "
                         f"and {reference.shape}")


def psnr(generated: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(t,) PSNR in dB per frame, float64 (inf for identical frames)."""
    _check_pair(generated, reference)
    mse = np.array([np.mean(np.square(g.astype(np.float64) - r.astype(np.float64)))  # per frame: bounded memory
                    for g, r in zip(generated, reference)], np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse)


def l1(generated: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """(t,) mean absolute difference per frame on the [0, 1] scale, computed in float."""
    _check_pair(generated, reference)
    return np.array([np.mean(np.abs(g.astype(np.float64) - r.astype(np.float64)))
                     for g, r in zip(generated, reference)], np.float64) / data_range


SSIM_WINDOW, SSIM_SIGMA, SSIM_TRUNCATE = 7, 1.5, 3.5  # scikit-image's defaults


def ssim_window_size(gaussian_weights: bool) -> int:
    return 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1 if gaussian_weights else SSIM_WINDOW


def _check_masks(generated: np.ndarray, masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.shape != generated.shape[:3]:
        raise ValueError(f"masks must be (t, h, w) bool = {generated.shape[:3]}, got {masks.dtype} {masks.shape}")
    return masks


def psnr_masked(generated: np.ndarray, reference: np.ndarray, masks: np.ndarray,
                data_range: float = 255.0) -> np.ndarray:
    """(t,) PSNR in dB per frame from the MSE over the mask's pixels (inf: identical there, nan: empty mask)."""
    _check_pair(generated, reference)
    masks = _check_masks(generated, masks)
    mse = np.array([np.mean(np.square(g[m].astype(np.float64) - r[m].astype(np.float64))) if m.any() else np.nan
                    for g, r, m in zip(generated, reference, masks)], np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse)


def l1_masked(generated: np.ndarray, reference: np.ndarray, masks: np.ndarray,
              data_range: float = 255.0) -> np.ndarray:
    """(t,) mean absolute difference over the mask's pixels on the [0, 1] scale (nan: empty mask)."""
    _check_pair(generated, reference)
    masks = _check_masks(generated, masks)
    return np.array([np.mean(np.abs(g[m].astype(np.float64) - r[m].astype(np.float64))) if m.any() else np.nan
                     for g, r, m in zip(generated, reference, masks)], np.float64) / data_range


def _ssim_plane(x: np.ndarray, y: np.ndarray, gaussian_weights: bool, cov_norm: float,
                data_range: float) -> float:
    """scikit-image's structural_similarity of two float64 (h, w) planes, the same operations
    in the same order (so the same float64 value), with scipy's 'reflect' border."""
    return float(_ssim_plane_map(x, y, gaussian_weights, cov_norm, data_range).mean(dtype=np.float64))


def _ssim_plane_map(x: np.ndarray, y: np.ndarray, gaussian_weights: bool, cov_norm: float,
                    data_range: float) -> np.ndarray:
    """The SSIM map of two planes where the window lies inside the image ((h - 2 pad, w - 2 pad))."""
    from scipy import ndimage

    if gaussian_weights:
        def window(z):
            return ndimage.gaussian_filter(z, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")
    else:
        def window(z):
            return ndimage.uniform_filter(z, size=SSIM_WINDOW)
    ux, uy = window(x), window(y)
    uxx, uyy, uxy = window(x * x), window(y * y), window(x * y)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (ssim_window_size(gaussian_weights) - 1) // 2  # only windows fully inside the image count
    return s[pad: s.shape[0] - pad, pad: s.shape[1] - pad]


def ssim(generated: np.ndarray, reference: np.ndarray, *, gaussian_weights: bool = False,
         use_sample_covariance: bool = True, data_range: float = 255.0, progress=None) -> np.ndarray:
    """(t,) SSIM per frame (scikit-image semantics, channels averaged), in float64.
    `progress`, if given, is called with 1 after each frame."""
    _check_pair(generated, reference)
    size = ssim_window_size(gaussian_weights)
    if min(generated.shape[1:3]) < size:
        raise ValueError(f"SSIM needs frames of at least {size}x{size}, got {generated.shape[1:3]}")
    n = size ** 2
    cov_norm = n / (n - 1) if use_sample_covariance else 1.0
    out = np.zeros(len(generated), np.float64)
    # one (h, w) plane at a time: scipy filters a contiguous 2-D plane 2.5x faster than the
    # same plane inside a (t, h, w, c) array, and the working set stays in cache
    for i, (g, r) in enumerate(zip(generated, reference)):
        g = np.ascontiguousarray(np.moveaxis(g, -1, 0), np.float64)
        r = np.ascontiguousarray(np.moveaxis(r, -1, 0), np.float64)
        out[i] = np.mean([_ssim_plane(g[c], r[c], gaussian_weights, cov_norm, float(data_range))
                          for c in range(len(g))])
        if progress is not None:
            progress(1)
    return out


def ssim_with_masks(generated: np.ndarray, reference: np.ndarray, masks: np.ndarray, *,
                    gaussian_weights: bool = False, data_range: float = 255.0,
                    progress=None) -> tuple[np.ndarray, np.ndarray]:
    """((t,) whole-frame SSIM as `ssim`, (t,) mean of the SSIM map over the mask's pixels whose
    window lies inside the image (nan where there are none)): one SSIM map per plane serves both."""
    _check_pair(generated, reference)
    masks = _check_masks(generated, masks)
    size = ssim_window_size(gaussian_weights)
    if min(generated.shape[1:3]) < size:
        raise ValueError(f"SSIM needs frames of at least {size}x{size}, got {generated.shape[1:3]}")
    n = size ** 2
    cov_norm = n / (n - 1)
    pad = (size - 1) // 2
    whole, figure = np.zeros(len(generated), np.float64), np.zeros(len(generated), np.float64)
    for i, (g, r, m) in enumerate(zip(generated, reference, masks)):
        g = np.ascontiguousarray(np.moveaxis(g, -1, 0), np.float64)
        r = np.ascontiguousarray(np.moveaxis(r, -1, 0), np.float64)
        maps = [_ssim_plane_map(g[c], r[c], gaussian_weights, cov_norm, float(data_range)) for c in range(len(g))]
        whole[i] = np.mean([s.mean(dtype=np.float64) for s in maps])  # as `ssim`: per plane, then channels
        inner = m[pad: m.shape[0] - pad, pad: m.shape[1] - pad]
        figure[i] = np.mean(np.mean(maps, axis=0)[inner]) if inner.any() else np.nan
        if progress is not None:
            progress(1)
    return whole, figure
