"""controlnext_jax/metrics/contact_sheet.py: the grid layout and the frame choice.

comparison_sheet itself runs in tests/test_eval_synthetic.py (compare_baselines end to end).
"""

import numpy as np
import pytest

from controlnext_jax.metrics.contact_sheet import evenly_spaced, frame_grid


def test_frame_grid_places_frames_with_white_gaps():
    a = np.full((3, 2, 3), 10, np.uint8)
    b = np.full((3, 2, 3), 20, np.uint8)
    sheet = frame_grid([[a, b], [None, a, b]], gap=1)
    assert sheet.shape == (7, 8, 3)
    assert (sheet[0:3, 0:2] == 10).all() and (sheet[0:3, 3:5] == 20).all()
    assert (sheet[0:3, 6:8] == 255).all()            # row 0 is one frame short
    assert (sheet[4:7, 0:2] == 255).all()            # None leaves the cell white
    assert (sheet[4:7, 3:5] == 10).all() and (sheet[4:7, 6:8] == 20).all()
    assert (sheet[3] == 255).all() and (sheet[:, 2] == 255).all()
    with pytest.raises(ValueError, match="must all be"):
        frame_grid([[a, np.zeros((4, 2, 3), np.uint8)]])


def test_evenly_spaced():
    np.testing.assert_array_equal(evenly_spaced(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spaced(3, 6), [0, 1, 2])
    np.testing.assert_array_equal(evenly_spaced(5, 1), [0])
    assert len(evenly_spaced(0, 3)) == 0
