"""The figure-region loss weight: the release's hand weighting carried over to whole figures.

The release weights the loss up inside confident hand boxes (`hand_mask`) because hands are
small and the loss, averaged over the frame, barely notices them. On data whose figure masks
are known (`controlnext-synth` writes `masks/<name>.npz`, `masks` (frames, height, width)
bool, beside `videos/`), the same argument holds for the whole figure: it covers about a tenth
of a synthetic frame, while the static background, which the reference image already gives,
dominates the average. With `data.figure_weight=g` the loss weight is 1 + g inside the figure.
The masks are cropped with the video, resized to the training size like the hand canvas
(antialiased bilinear, so edges get fractions), and frame 0, the reference, is set to 1; the
diffusion loss average-pools the weight to the latent size (`hand_mask.pool_to_latent`); the VAE
objective weights its per-pixel L1 with it (`vae_loss`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controlnext_jax.training.hand_mask import region_weight

MASKS_KEY = "masks"


def mask_path(video: Path) -> Path:
    """Where `controlnext-synth` puts a clip's figure masks: <root>/masks/<stem>.npz."""
    return video.parent.parent / "masks" / f"{video.stem}.npz"


def read_figure_masks(path: str, frames: int, height: int, width: int) -> np.ndarray:
    """The (frames, height, width) bool masks of a clip; ValueError (one line) when the file
    holds no `masks` array of that shape. Never unpickles."""
    with np.load(path, allow_pickle=False) as data:
        if MASKS_KEY not in data:
            raise ValueError(f"holds no {MASKS_KEY!r} array")
        masks = data[MASKS_KEY]
    if masks.shape != (frames, height, width):
        raise ValueError(f"masks of shape {masks.shape}, its video needs ({frames}, {height}, {width})")
    return masks.astype(bool)


def figure_weight(masks: np.ndarray, size: tuple[int, int], gain: float) -> np.ndarray:
    """(F, h, w) masks (already cropped like the video) -> float32 (F, *size) loss weight:
    1 + gain * the antialiased bilinear resize of the mask, frame 0 = 1 (as the hand weight)."""
    return region_weight(masks.astype(np.float32), size, gain)
