"""The evaluation dataset: reference image formats, and ground-truth frames brought to the
generated size exactly as the pipeline brings the reference (prepare_reference)."""

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from controlnext_jax.errors import UserError
from controlnext_jax.metrics.dataset import Alignment, cover_crop, discover
from controlnext_jax.pose.video import prepare_reference


@pytest.mark.parametrize("hw", [(320, 192), (64, 96), (512, 512)])
def test_ground_truth_is_cropped_as_the_pipeline_crops_the_reference(hw):
    frames = np.stack([skimage_data.astronaut()[:, 40:460], skimage_data.astronaut()[::-1, 40:460]])
    out = cover_crop(frames, *hw)
    assert out.shape == (2, *hw, 3)
    for frame, got in zip(frames, out):
        np.testing.assert_array_equal(got, prepare_reference(frame, *hw))
    assert cover_crop(frames, 512, 420) is frames  # already the size: untouched


@pytest.mark.parametrize("name", ["reference.png", "reference.jpg", "reference.jpeg", "reference.webp"])
def test_reference_in_any_listed_format(tmp_path, name):
    clip = tmp_path / "c1"
    clip.mkdir()
    for video in ("driving.mp4", "ground_truth.mp4"):
        (clip / video).write_bytes(b"")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(clip / name)
    (found,) = discover(tmp_path)
    assert found.reference == clip / name


def test_missing_files_are_named(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "driving.mp4").write_bytes(b"")
    with pytest.raises(UserError, match=r"dataset.root=.*: clip c1 is missing reference image \(reference.png/"
                                        r"reference.jpg/reference.jpeg/reference.webp\), ground_truth.mp4"):
        discover(tmp_path)
    with pytest.raises(UserError, match="dataset.generated_dir=.*nowhere: not a folder"):
        discover(tmp_path, tmp_path / "nowhere")


def test_alignment_indices():
    a = Alignment(sample_stride=3, offset=4, max_frames=5)
    np.testing.assert_array_equal(a.source_indices(20, 100), [4, 7, 10, 13, 16])
    np.testing.assert_array_equal(a.source_indices(20, 12), [4, 7, 10])  # cut where the source ends
    assert Alignment(2, False).aligned_count(10) == 10 and Alignment(2, True).aligned_count(10) == 9
