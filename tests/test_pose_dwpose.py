"""The DWPose code path end to end on small random-weight ONNX models.

The stand-in models have the release's signatures (detector "images" (1,3,640,640)
-> (1,8400,85); pose "input" (1,3,384,288) -> simcc_x (1,133,576), simcc_y
(1,133,768)) and random weights, plus planted boxes and SimCC peaks, so every
decoding step can be checked against numbers worked out here by hand.
"""

import numpy as np
import pytest

from controlnext_jax.errors import UserError
from controlnext_jax.pose.dwpose import DWPoseDetector, _providers, decode_simcc, nms
from controlnext_jax.testing import random_onnx as ro

FRAME_HW = (360, 480)
RATIO = min(640 / FRAME_HW[0], 640 / FRAME_HW[1])  # letterbox scale, 4/3
# planted in letterboxed pixels: (xyxy, objectness x class score, stride, class)
PERSON_A = ((100.0, 80.0, 260.0, 400.0), 0.9, 32, 0)
PERSON_A_DUP = ((104.0, 84.0, 262.0, 396.0), 0.6, 16, 0)  # IoU > 0.45 with A: suppressed
PERSON_C = ((400.0, 100.0, 560.0, 420.0), 0.5, 8, 0)
FAINT = ((300.0, 450.0, 340.0, 470.0), 0.2, 8, 0)  # passes 0.1, not 0.3
NOT_A_PERSON = ((20.0, 20.0, 80.0, 60.0), 0.95, 8, 1)

rng = np.random.default_rng(0)
BINS_X = rng.integers(0, 576, 133)
BINS_Y = rng.integers(0, 768, 133)
SCORES = rng.uniform(0.35, 0.95, 133)
SCORES[6] = 0.25  # right shoulder (COCO 6) below 0.3: the neck gets score 0
DEAD = 50  # a keypoint whose SimCC is negative everywhere: location -1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("dwpose")
    prior = ro.empty_detector_prior()
    for box, score, stride, cls in (PERSON_A, PERSON_A_DUP, PERSON_C, FAINT, NOT_A_PERSON):
        ro.plant_box(prior, box, score, stride=stride, cls=cls)
    det = ro.build_detector(str(d / "yolox_l.onnx"), prior, noise=1e-7)
    empty_det = ro.build_detector(str(d / "yolox_empty.onnx"), noise=1e-7)
    priors = ro.empty_pose_prior()
    for k in range(133):
        ro.plant_keypoint(priors, k, BINS_X[k], BINS_Y[k], SCORES[k])
    priors[0][0, DEAD] -= 1.0
    priors[1][0, DEAD] -= 1.0
    pose = ro.build_pose(str(d / "dw-ll_ucoco_384.onnx"), priors, noise=1e-7)
    return det, empty_det, pose


def expected_keypoints(box_letterboxed):
    """Hand-worked: box -> padded 1.25, widened to 3:4 -> SimCC bins -> frame pixels."""
    x1, y1, x2, y2 = np.array(box_letterboxed) / RATIO
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    w, h = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    bx = np.where(np.arange(133) == DEAD, -1, BINS_X) / 2.0
    by = np.where(np.arange(133) == DEAD, -1, BINS_Y) / 2.0
    return np.stack([cx - w / 2 + bx / 288 * w, cy - h / 2 + by / 384 * h], axis=-1)


def test_models_have_the_release_signatures(models):
    import onnxruntime as ort

    det, _, pose = models
    d = ort.InferenceSession(det, providers=["CPUExecutionProvider"])
    p = ort.InferenceSession(pose, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in d.get_inputs()] == [("images", [1, 3, 640, 640])]
    assert [o.shape for o in d.get_outputs()] == [[1, 8400, 85]]
    assert [(i.name, i.shape) for i in p.get_inputs()] == [("input", [1, 3, 384, 288])]
    assert [(o.name, o.shape) for o in p.get_outputs()] == [
        ("simcc_x", [1, 133, 576]), ("simcc_y", [1, 133, 768])]


def test_person_boxes_letterbox_nms_and_thresholds(models):
    det, _, pose = models
    detector = DWPoseDetector(det, pose, device="cpu")
    frame = np.random.default_rng(1).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    boxes = detector.boxes(frame)
    want = np.array([PERSON_A[0], PERSON_C[0]]) / RATIO  # best first; dup, faint, cls 1 gone
    np.testing.assert_allclose(boxes, want, atol=0.05)


def test_detect_end_to_end(models):
    det, _, pose = models
    detector = DWPoseDetector(det, pose, device="cpu")
    frame = np.random.default_rng(2).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    result = detector.detect(frame)
    assert result.num_people == 2
    size = np.array([FRAME_HW[1], FRAME_HW[0]], dtype=np.float64)
    for n, planted in enumerate((PERSON_A, PERSON_C)):
        coco = expected_keypoints(planted[0])  # (133, 2) pixels
        got = result.keypoints[n] * size
        # OpenPose body order from COCO: nose, (neck), r-sho, r-elb, r-wri, l-sho, l-elb,
        # l-wri, r-hip, r-knee, r-ank, l-hip, l-knee, l-ank, r-eye, l-eye, r-ear, l-ear
        order = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
        for op, c in enumerate(order):
            if c is not None:
                np.testing.assert_allclose(got[op], coco[c], atol=0.02)
                np.testing.assert_allclose(result.scores[n, op], SCORES[c], atol=1e-5)
        np.testing.assert_allclose(got[1], (coco[5] + coco[6]) / 2, atol=0.02)
        assert result.scores[n, 1] == 0.0  # right shoulder 0.25 -> no neck
        np.testing.assert_allclose(got[18:], coco[17:], atol=0.02)  # feet, face, hands
        np.testing.assert_allclose(result.scores[n, 18:], np.where(
            np.arange(17, 133) == DEAD, result.scores[n, 18 + DEAD - 17], SCORES[17:]), atol=1e-5)
        assert result.scores[n, 18 + DEAD - 17] <= 0


def test_no_person_falls_back_to_the_whole_frame(models):
    _, empty_det, pose = models
    detector = DWPoseDetector(empty_det, pose, device="cpu")
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    assert len(detector.boxes(frame)) == 0
    result = detector.detect(frame)
    assert result.num_people == 1
    whole = np.array([0, 0, FRAME_HW[1], FRAME_HW[0]]) * RATIO
    size = np.array([FRAME_HW[1], FRAME_HW[0]], dtype=np.float64)
    np.testing.assert_allclose(result.keypoints[0, 0] * size, expected_keypoints(whole)[0],
                               atol=0.02)


def test_nms_and_simcc_units():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29]], np.float32)
    # IoU of the first two with the +1 convention: 81 / (100 + 100 - 81) = 0.68
    assert nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.45) == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.7) == [1, 2, 0]
    sx = np.zeros((2, 8), np.float32)
    sy = np.zeros((2, 6), np.float32)
    sx[0, 5], sy[0, 3] = 0.9, 0.4
    locs, scores = decode_simcc(sx, sy)
    np.testing.assert_allclose(locs, [[2.5, 1.5], [-0.5, -0.5]])
    np.testing.assert_allclose(scores, [0.4, 0.0])


def test_bad_paths_and_devices(models, tmp_path):
    det, _, pose = models
    with pytest.raises(UserError, match="pose.det_model: ONNX file not found"):
        DWPoseDetector(str(tmp_path / "missing.onnx"), pose)
    with pytest.raises(ValueError, match="pose.device must be one of auto, cpu, cuda"):
        _providers("tpu")
    assert _providers("auto")[-1] == "CPUExecutionProvider"


def test_preview_cli_with_dwpose(models, tmp_path):
    import json
    import subprocess
    import sys

    import imageio.v2 as iio

    det, _, pose = models
    rng_ = np.random.default_rng(3)
    video = str(tmp_path / "drive.mp4")
    iio.mimwrite(video, [rng_.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(6)],
                 fps=12, macro_block_size=1)
    image = str(tmp_path / "ref.png")
    iio.imwrite(image, rng_.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    out = str(tmp_path / "pose.mp4")
    r = subprocess.run([sys.executable, "-m", "controlnext_jax.commands.pose", f"video={video}",
                        f"image={image}", f"out={out}", "pose=dwpose", f"pose.det_model={det}",
                        f"pose.pose_model={pose}", "pose.device=cpu", "height=128", "width=96",
                        "sample_stride=2", "progress=false"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.load(open(tmp_path / "pose.json"))
    # reference + frames 0, 2, 4; two planted people in every frame
    assert [len(f) for f in meta["frames"]] == [2, 2, 2, 2]
    # no frame has exactly one person: the fit falls back to each frame's first person
    assert meta["rescale"]["frames_used"] == 3
    frames = [f for f in iio.get_reader(out)]
    assert len(frames) == 4 and frames[0].shape == (128, 96, 3)
