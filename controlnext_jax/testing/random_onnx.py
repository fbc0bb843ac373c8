"""Small random-weight ONNX models with the DWPose release's input/output signatures.

The real `yolox_l.onnx` / `dw-ll_ucoco_384.onnx` weights are a download we cannot
make offline, so the DWPose code path is exercised (tests, benchmark) on stand-ins
that have the same names, shapes and output semantics:

- detector: "images" (1, 3, 640, 640) -> "output" (1, 8400, 85), rows ordered over
  the stride-8, 16 and 32 grids like the YOLOX head, columns (dx, dy, log w, log h,
  objectness, 80 class probabilities);
- pose: "input" (1, 3, 384, 288) -> "simcc_x" (1, 133, 576), "simcc_y" (1, 133, 768).

Each output is a small input-dependent random term plus a constant `prior` tensor,
so a test can plant boxes and keypoints at known places and check the decoding.
Needs the `onnx` package (a test dependency).
"""

from __future__ import annotations

import numpy as np

DET_GRID_STRIDES = (8, 16, 32)
DET_INPUT = 640
POSE_INPUT_HW = (384, 288)
NUM_WHOLEBODY = 133


def detector_rows() -> int:
    return sum((DET_INPUT // s) ** 2 for s in DET_GRID_STRIDES)


def detector_row(stride: int, cell_x: int, cell_y: int) -> int:
    """Row of the (1, 8400, 85) output for a grid cell of the given stride."""
    row = 0
    for s in DET_GRID_STRIDES:
        n = DET_INPUT // s
        if s == stride:
            return row + cell_y * n + cell_x
        row += n * n
    raise ValueError(f"stride must be one of {DET_GRID_STRIDES}, got {stride}")


def empty_detector_prior() -> np.ndarray:
    """(1, 8400, 85) prior with nothing detected (all probabilities 0.01)."""
    prior = np.zeros((1, detector_rows(), 85), dtype=np.float32)
    prior[..., 4:] = 0.01
    return prior


def plant_box(prior: np.ndarray, box_xyxy, score: float, stride: int = 32,
              cls: int = 0) -> None:
    """Make the detector output `box_xyxy` (letterboxed 640x640 pixels) with
    objectness * class probability = score, at the cell holding the box centre."""
    x1, y1, x2, y2 = box_xyxy
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    cell_x, cell_y = int(cx // stride), int(cy // stride)
    row = detector_row(stride, cell_x, cell_y)
    prior[0, row, 0] = cx / stride - cell_x
    prior[0, row, 1] = cy / stride - cell_y
    prior[0, row, 2] = np.log(w / stride)
    prior[0, row, 3] = np.log(h / stride)
    prior[0, row, 4] = 1.0
    prior[0, row, 5 + cls] = score


def empty_pose_prior() -> tuple[np.ndarray, np.ndarray]:
    h, w = POSE_INPUT_HW
    return (np.zeros((1, NUM_WHOLEBODY, 2 * w), np.float32),
            np.zeros((1, NUM_WHOLEBODY, 2 * h), np.float32))


def plant_keypoint(priors, k: int, bin_x: int, bin_y: int, score: float) -> None:
    """Put keypoint k's SimCC maxima at (bin_x, bin_y) with the given score."""
    sx, sy = priors
    sx[0, k, bin_x] = score
    sy[0, k, bin_y] = score


def _save(graph, path: str) -> str:
    import onnx

    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def build_detector(path: str, prior: np.ndarray | None = None, seed: int = 0,
                   noise: float = 1e-4) -> str:
    """YOLOX-shaped detector: per stride, average-pool -> 1x1 conv (3 -> 85)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    prior = empty_detector_prior() if prior is None else prior.astype(np.float32)
    nodes, inits, heads = [], [numpy_helper.from_array(prior, "prior")], []
    for s in DET_GRID_STRIDES:
        weight = (rng.standard_normal((85, 3, 1, 1)) * noise).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{s}"))
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"pool{s}"], kernel_shape=[s, s],
                             strides=[s, s]),
            helper.make_node("Conv", [f"pool{s}", f"w{s}"], [f"conv{s}"]),
            helper.make_node("Reshape", [f"conv{s}", "flat_shape"], [f"flat{s}"]),
        ]
        heads.append(f"flat{s}")
    inits.append(numpy_helper.from_array(np.array([1, 85, -1], np.int64), "flat_shape"))
    nodes += [
        helper.make_node("Concat", heads, ["heads"], axis=2),
        helper.make_node("Transpose", ["heads"], ["rows"], perm=[0, 2, 1]),
        helper.make_node("Add", ["rows", "prior"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "yolox_l_random",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DET_INPUT, DET_INPUT])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, detector_rows(), 85])],
        inits)
    return _save(graph, path)


def build_pose(path: str, priors=None, seed: int = 0, noise: float = 1e-4) -> str:
    """SimCC-shaped pose model: global average pool -> linear -> reshape, plus priors."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    prior_x, prior_y = empty_pose_prior() if priors is None else priors
    h, w = POSE_INPUT_HW
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["feat"]),
    ]
    inits = []
    for name, prior in (("simcc_x", prior_x), ("simcc_y", prior_y)):
        bins = prior.shape[-1]
        weight = (rng.standard_normal((3, NUM_WHOLEBODY * bins)) * noise).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"{name}_w"),
                  numpy_helper.from_array(prior.astype(np.float32), f"{name}_prior"),
                  numpy_helper.from_array(np.array([1, NUM_WHOLEBODY, bins], np.int64),
                                          f"{name}_shape")]
        nodes += [
            helper.make_node("MatMul", ["feat", f"{name}_w"], [f"{name}_lin"]),
            helper.make_node("Reshape", [f"{name}_lin", f"{name}_shape"], [f"{name}_3d"]),
            helper.make_node("Add", [f"{name}_3d", f"{name}_prior"], [name]),
        ]
    graph = helper.make_graph(
        nodes, "dw_ll_ucoco_384_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, NUM_WHOLEBODY, 2 * w]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, NUM_WHOLEBODY, 2 * h])],
        inits)
    return _save(graph, path)
