"""The offline detector (MediaPipe Holistic, bundled weights) on a real photograph."""

from types import SimpleNamespace

import numpy as np
import pytest
from skimage import data as skimage_data

from controlnext_jax.pose.mediapipe_holistic import (
    BLAZEPOSE_FOR_OPENPOSE_BODY,
    FACE_MESH_FOR_300W,
    MediaPipeHolisticDetector,
    holistic_to_pose,
)
from controlnext_jax.pose.types import FACE, LEFT_HAND, RIGHT_HAND


@pytest.fixture(scope="module")
def astronaut_pose():
    image = skimage_data.astronaut()  # 512x512 RGB portrait, a PyPI package's photo
    with MediaPipeHolisticDetector() as detector:
        return detector.detect(image)


def test_finds_one_person_with_plausible_keypoints(astronaut_pose):
    pose = astronaut_pose
    assert pose.num_people == 1
    kp, sc = pose.keypoints[0], pose.scores[0]
    # Regions read off the photo (x, y normalised): face centred near (0.43, 0.2),
    # shoulders at about a third of the height, to either side of the face.
    x, y = kp[0]
    assert 0.35 < x < 0.52 and 0.14 < y < 0.32, "nose"
    for eye in (14, 15):
        assert 0.33 < kp[eye, 0] < 0.55 and 0.12 < kp[eye, 1] < 0.28, "eyes"
        assert kp[eye, 1] < kp[0, 1], "eyes above the nose"
    assert kp[14, 0] < kp[15, 0], "the subject's right eye is on the image's left"
    assert 0.1 < kp[2, 0] < 0.35 and 0.35 < kp[2, 1] < 0.6, "right shoulder"
    assert 0.5 < kp[5, 0] < 0.75 and 0.35 < kp[5, 1] < 0.6, "left shoulder"
    assert (sc[[0, 2, 5, 14, 15]] > 0.9).all()
    assert sc[1] == 1.0 and np.allclose(kp[1], (kp[2] + kp[5]) / 2)  # DWPose neck rule
    face = kp[FACE]
    assert np.isfinite(face).all() and (sc[FACE] == 1.0).all()
    # the 68 face points surround the nose inside the head region
    assert face[:, 0].min() > 0.28 and face[:, 0].max() < 0.6
    assert face[:, 1].min() > 0.08 and face[:, 1].max() < 0.38


def test_no_person_gives_an_empty_pose():
    flat = np.full((240, 320, 3), 127, np.uint8)
    with MediaPipeHolisticDetector() as detector:
        assert detector.detect(flat).num_people == 0


def _landmarks(points, visibility=None):
    return SimpleNamespace(landmark=[
        SimpleNamespace(x=float(x), y=float(y), visibility=float(v))
        for (x, y), v in zip(points, visibility if visibility is not None else [0] * len(points))])


def test_mapping_onto_the_dwpose_layout():
    rng = np.random.default_rng(0)
    body = rng.uniform(0, 1, (33, 2))
    vis = rng.uniform(0.5, 1, 33)
    vis[12] = 0.2  # right shoulder hidden -> no neck
    mesh = rng.uniform(0, 1, (468, 2))
    left = rng.uniform(0, 1, (21, 2))
    result = SimpleNamespace(pose_landmarks=_landmarks(body, vis),
                             face_landmarks=_landmarks(mesh),
                             left_hand_landmarks=_landmarks(left), right_hand_landmarks=None)
    pose = holistic_to_pose(result, face_score=0.8, hand_score=0.7)
    kp, sc = pose.keypoints[0], pose.scores[0]
    for op, bp in BLAZEPOSE_FOR_OPENPOSE_BODY.items():
        np.testing.assert_allclose(kp[op], body[bp])
        assert sc[op] == pytest.approx(vis[bp])
    assert kp[2].tolist() == pytest.approx(body[12].tolist())  # right shoulder = BlazePose 12
    assert sc[1] == 0.0
    np.testing.assert_allclose(kp[FACE], mesh[list(FACE_MESH_FOR_300W)])
    assert len(set(FACE_MESH_FOR_300W)) == 68 and max(FACE_MESH_FOR_300W) < 468
    assert (sc[FACE] == 0.8).all()
    np.testing.assert_allclose(kp[LEFT_HAND], left)
    assert (sc[LEFT_HAND] == 0.7).all()
    assert np.isnan(kp[RIGHT_HAND]).all() and (sc[RIGHT_HAND] == 0).all()  # not found
    assert np.isnan(kp[19]).all() and np.isnan(kp[22]).all()  # no small toes in BlazePose
    nobody = SimpleNamespace(pose_landmarks=None, face_landmarks=None,
                             left_hand_landmarks=None, right_hand_landmarks=None)
    assert holistic_to_pose(nobody).num_people == 0


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"pose.face_score must be in \[0, 1\]"):
        MediaPipeHolisticDetector(face_score=2.0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        MediaPipeHolisticDetector().detect(np.zeros((10, 10), np.uint8))
