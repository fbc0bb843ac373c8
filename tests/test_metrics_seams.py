"""Window starts and the seam statistic on synthetic videos with known jumps."""

import numpy as np
import pytest

from controlnext_jax.metrics.seams import boundary_transitions, contributing_windows, frame_changes, seam_stats
from controlnext_jax.sampling.windows import window_starts


def test_window_starts():
    assert window_starts(60, 24, 6) == [0, 18, 36]
    assert window_starts(50, 24, 6) == [0, 18, 26]  # last start clamped to 50 - 24
    assert window_starts(240, 24, 6)[-2:] == [198, 216]
    assert window_starts(14, 24, 6) == [0]  # batch_frames clamped to num_frames
    assert window_starts(25, 24, 6) == [0, 1]
    assert window_starts(30, 14, 0) == [0, 14, 16]
    with pytest.raises(ValueError, match="overlap"):
        window_starts(60, 24, 24)
    with pytest.raises(ValueError, match="num_frames"):
        window_starts(0, 24, 6)


def test_contributing_windows_follow_accumulation_rule():
    sets = contributing_windows(60, 24, 6)
    # window 1 starts at 18 but skips its first frame (the reference pose slot)
    assert sets[18] == {0} and sets[19] == {0, 1} and sets[23] == {0, 1} and sets[24] == {1}
    assert sets[59] == {2} and all(sets)
    assert boundary_transitions(60, 24, 6) == [18, 23, 36, 41]
    assert boundary_transitions(20, 24, 6) == []


def _ramp_video(steps):
    values = np.concatenate([[0], np.cumsum(steps)]).astype(np.uint8)
    return values[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)


def test_seam_ratio_on_known_jumps():
    n = 60
    boundaries = boundary_transitions(n, 24, 6)
    steps = np.full(n - 1, 2)
    steps[boundaries] = 6  # seams three times the usual change
    steps[0] = 40  # reference-pose frame -> first driving frame: not a seam, skipped
    changes = frame_changes(_ramp_video(steps))
    np.testing.assert_allclose(changes, steps / 255)
    stats = seam_stats([(changes, boundaries)], first_transition=1)
    assert stats.ratio == pytest.approx(3.0) and stats.local_ratio == pytest.approx(3.0)
    assert stats.num_boundaries == 4 and stats.num_interior == n - 2 - 4
    smooth = frame_changes(_ramp_video(np.full(n - 1, 2)))
    assert seam_stats([(smooth, boundaries)], 1).ratio == pytest.approx(1.0)


def test_seam_stats_pool_clips():
    a = np.array([1.0, 1.0, 3.0, 1.0])
    b = np.array([2.0, 2.0, 2.0, 6.0, 2.0])
    stats = seam_stats([(a, [2]), (b, [3])])
    assert stats.boundary_mean == pytest.approx(4.5)
    assert stats.interior_mean == pytest.approx((3 * 1 + 4 * 2) / 7)
    assert stats.local_ratio == pytest.approx(3.0)
    assert np.isnan(seam_stats([(a, [])]).ratio)
