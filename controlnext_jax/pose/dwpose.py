"""DWPose whole-body detection: the release's ONNX pair run with onnxruntime.

Two networks, weights from user-given paths (configs/pose/dwpose.yaml):
  1. `yolox_l.onnx`: person boxes. Input (1, 3, 640, 640) float, the frame
     letterboxed (top-left, padded with 114, values 0..255, RGB as the release fed
     it); output (1, 8400, 85) raw YOLOX head (cx, cy, log w, log h, objectness,
     80 class scores) over the 80x80, 40x40 and 20x20 grids of strides 8, 16, 32.
  2. `dw-ll_ucoco_384.onnx`: 133 COCO-WholeBody keypoints per box. Input
     (1, 3, 384, 288), the box padded by 1.25, widened to 3:4 and warped there,
     ImageNet mean/std; outputs SimCC x (1, 133, 576) and y (1, 133, 768) at
     split ratio 2.
The 133 points become the 134-point OpenPose-ordered layout of types.Pose (neck
inserted, body reordered). Every step follows docs/release_semantics.md so that the poses equal
those the original pipeline would draw.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import cv2
import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.pose.types import VISIBLE_SCORE, Pose

DET_SIZE = (640, 640)  # (rows, cols)
DET_PAD_VALUE = 114
DET_STRIDES = (8, 16, 32)
DET_SCORE_THR = 0.1  # candidates entering NMS
DET_NMS_IOU = 0.45
PERSON_SCORE_THR = 0.3  # boxes kept for the pose model
PERSON_CLASS = 0

BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53])
IMAGENET_STD = np.array([58.395, 57.12, 57.375])

# OpenPose body index <- COCO-WholeBody index (the neck, OpenPose 1, is computed).
COCO_FOR_OPENPOSE_BODY = {
    0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16,
    11: 11, 12: 13, 13: 15, 14: 2, 15: 1, 16: 4, 17: 3,
}
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6


# ---------------------------------------------------------------- person detector
def letterbox(image: np.ndarray, size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> (3, rows, cols) float32 input and the resize ratio."""
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1])
    new_w, new_h = int(image.shape[1] * ratio), int(image.shape[0] * ratio)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = np.full((size[0], size[1], 3), DET_PAD_VALUE, dtype=np.uint8)
    padded[:new_h, :new_w] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), ratio


@functools.lru_cache(maxsize=4)
def _head_grid(size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) and stride of every head row: row-major grids, finest stride first."""
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = size[0] // stride, size[1] // stride
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
        cells.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        cell_strides.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells), np.concatenate(cell_strides)


def decode_yolox(raw: np.ndarray, size: tuple[int, int] = DET_SIZE,
                 strides: Sequence[int] = DET_STRIDES) -> np.ndarray:
    """(N, 85) raw head -> (N, 85) with boxes as (cx, cy, w, h) in input pixels."""
    grid, stride = _head_grid(tuple(size), tuple(strides))
    if raw.shape[0] != grid.shape[0]:
        raise ValueError(f"detector output has {raw.shape[0]} rows, expected {grid.shape[0]} "
                         f"for a {size[1]}x{size[0]} input at strides {tuple(strides)}")
    out = raw.astype(np.float32, copy=True)
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS, best score first; areas use the inclusive-pixel (+1) convention."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def person_boxes(raw: np.ndarray, ratio: float) -> np.ndarray:
    """Raw detector output (1, N, 85) -> (K, 4) person boxes xyxy in frame pixels.

    The release runs class-aware NMS over all 80 classes and then keeps the person
    class; NMS never mixes classes, so running it on the person class alone gives the
    same boxes in the same order.
    """
    pred = decode_yolox(raw[0])
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    boxes = np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=1) / ratio
    scores = pred[:, 4] * pred[:, 5 + PERSON_CLASS]
    candidates = scores > DET_SCORE_THR
    boxes, scores = boxes[candidates], scores[candidates]
    if len(scores) == 0:
        return np.zeros((0, 4))
    keep = nms(boxes, scores, DET_NMS_IOU)
    boxes, scores = boxes[keep], scores[keep]
    return boxes[scores > PERSON_SCORE_THR]


# --------------------------------------------------------------------- pose model
def box_center_scale(box: np.ndarray, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = box
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    scale = np.array([x2 - x1, y2 - y1]) * padding
    return center, scale


def fix_aspect(scale: np.ndarray, aspect: float) -> np.ndarray:
    """Grow the (w, h) box scale to the model's w / h aspect."""
    w, h = scale
    return np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])


def crop_matrix(center: np.ndarray, scale: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """2x3 affine taking the box (center, scale) to the model input (no rotation).

    Built, as the release builds it, from three float32 point pairs (centre, the
    point half a box-width above it, and that offset turned 90 degrees) so that the
    warp matches it to the last bit.
    """
    out_w, out_h = out_wh

    def triangle(c: np.ndarray, half_w: float) -> np.ndarray:
        p0 = np.asarray(c, dtype=np.float32)
        p1 = np.asarray(c + np.array([0.0, -half_w]), dtype=np.float32)
        d = p0 - p1  # float32 arithmetic, like the release's third point
        p2 = p1 + np.array([-d[1], d[0]], dtype=np.float32)  # (p0 - p1) turned 90 degrees
        return np.stack([p0, p1, p2])

    src = triangle(center, scale[0] * 0.5)
    dst = triangle(np.array([out_w * 0.5, out_h * 0.5]), out_w * 0.5)
    return cv2.getAffineTransform(src, dst)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Wy) -> (K, 2) input-pixel locations and (K,) scores.

    Score is the smaller of the two maxima; a point whose score is not positive gets
    location -1 (before the split-ratio division), as in the release.
    """
    locs = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locs[scores <= 0.0] = -1
    return locs / split_ratio, scores


def to_openpose_layout(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 133, 2), (N, 133) COCO-WholeBody -> (N, 134, 2), (N, 134) Pose layout.

    The neck is the shoulders' mean, with score 1 when both shoulders score above
    0.3 and 0 otherwise (so neck limbs are coloured by the other end's score alone).
    """
    n = keypoints.shape[0]
    neck = keypoints[:, [COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]].mean(axis=1)
    neck_score = np.logical_and(scores[:, COCO_LEFT_SHOULDER] > VISIBLE_SCORE,
                                scores[:, COCO_RIGHT_SHOULDER] > VISIBLE_SCORE).astype(np.float64)
    out_kp = np.zeros((n, 134, 2))
    out_sc = np.zeros((n, 134))
    for op, coco in COCO_FOR_OPENPOSE_BODY.items():
        out_kp[:, op], out_sc[:, op] = keypoints[:, coco], scores[:, coco]
    out_kp[:, 1], out_sc[:, 1] = neck, neck_score
    out_kp[:, 18:], out_sc[:, 18:] = keypoints[:, 17:], scores[:, 17:]  # feet, face, hands
    return out_kp, out_sc


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise UserError("pose.device=cuda but onnxruntime has no CUDAExecutionProvider "
                             f"(available: {available}); install onnxruntime-gpu or use auto/cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + [
            "CPUExecutionProvider"]
    raise UserError(f"pose.device must be one of auto, cpu, cuda; got {device!r}")


class DWPoseDetector:
    """detect(frame) -> Pose with the DWPose ONNX pair."""

    def __init__(self, det_model: str, pose_model: str, device: str = "auto",
                 num_threads: int = 0):
        import onnxruntime as ort

        for name, path in (("pose.det_model", det_model), ("pose.pose_model", pose_model)):
            if not path or not os.path.isfile(path):
                raise UserError(f"{name}: ONNX file not found: {path!r} (the DWPose "
                                        "release's yolox_l.onnx / dw-ll_ucoco_384.onnx)")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        providers = _providers(device)
        self.det = ort.InferenceSession(det_model, sess_options=options, providers=providers)
        self.pose = ort.InferenceSession(pose_model, sess_options=options, providers=providers)
        # The pose model's input size is read from the file (h, w) = (384, 288) for the
        # release, as the release reads it.
        pose_in = self.pose.get_inputs()[0]
        self.pose_input = pose_in.name
        self.pose_hw = tuple(int(v) for v in pose_in.shape[2:4])
        self.det_input = self.det.get_inputs()[0].name

    def boxes(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (K, 4) person boxes xyxy in pixels, best first."""
        image, ratio = letterbox(frame)
        raw = self.det.run(None, {self.det_input: image[None]})[0]
        return person_boxes(np.asarray(raw), ratio)

    def keypoints(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 whole-body keypoints (pixels) and scores for each box.

        No box: the whole frame is one box (the release's fallback), so a frame
        always yields one person, possibly with low scores everywhere.
        """
        if len(boxes) == 0:
            boxes = np.array([[0.0, 0.0, frame.shape[1], frame.shape[0]]])
        rows, cols = self.pose_hw
        all_kp, all_sc = [], []
        for box in boxes:
            center, scale = box_center_scale(np.asarray(box, dtype=np.float64))
            scale = fix_aspect(scale, cols / rows)
            crop = cv2.warpAffine(frame, crop_matrix(center, scale, (cols, rows)), (cols, rows),
                                  flags=cv2.INTER_LINEAR)
            x = ((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
            simcc_x, simcc_y = self.pose.run(None, {self.pose_input: x})[:2]
            locs, scores = decode_simcc(simcc_x[0], simcc_y[0])
            # model-input pixels -> frame pixels
            all_kp.append(locs / np.array([cols, rows]) * scale + center - scale / 2)
            all_sc.append(scores)
        return np.stack(all_kp), np.stack(all_sc)

    def detect(self, frame: np.ndarray) -> Pose:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        kp, sc = self.keypoints(frame, self.boxes(frame))
        kp, sc = to_openpose_layout(kp, sc)
        h, w = frame.shape[:2]
        return Pose(kp / np.array([float(w), float(h)]), sc)
