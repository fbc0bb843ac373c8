"""SVD's micro-conditioning: the UNet's `added_time_ids` (fps, motion bucket, noise augmentation)."""

from __future__ import annotations

import numpy as np

# What the ControlNeXt release feeds regardless of its caller's fps / motion_bucket_id
# (its pipeline overwrites them; docs/release_semantics.md, "Known quirks").
ORIGINAL_ADDED_TIME_IDS = (6.0, 128.0, 0.02)
# What its training feeds: motion bucket 127, not 128 (docs/release_semantics.md, Training).
TRAINING_ADDED_TIME_IDS = (6.0, 127.0, 0.02)


def added_time_ids(fps: int, motion_bucket_id: float, noise_aug_strength: float, *, batch: int = 1,
                   reproduce_original: bool = False) -> np.ndarray:
    """(batch, 3) float32 rows `[fps - 1, motion_bucket_id, noise_aug_strength]`.

    SVD was trained conditioned on fps - 1 (diffusers' pipeline subtracts the one before
    building the ids; so does ours). `reproduce_original=True` returns the release's fixed
    (6, 128, 0.02) for parity runs.
    """
    if not 1 <= fps <= 60:
        raise ValueError(f"fps={fps}: allowed range is 1..60")
    if not 0 <= motion_bucket_id <= 255:
        raise ValueError(f"motion_bucket_id={motion_bucket_id}: allowed range is 0..255")
    row = ORIGINAL_ADDED_TIME_IDS if reproduce_original else (fps - 1, motion_bucket_id, noise_aug_strength)
    return np.tile(np.asarray(row, np.float32), (batch, 1))
