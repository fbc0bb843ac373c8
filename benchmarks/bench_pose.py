"""Pose detection speed per detector on this machine (frames per second).

    .venv/bin/python benchmarks/bench_pose.py [--frames 20] [--threads 0]

Rows:
- mediapipe (static / tracking): the offline default, real bundled weights.
- dwpose pipeline: the DWPose code path (letterbox, NMS, affine crop, SimCC decode,
  layout) on tiny random-weight ONNX models: the cost around the networks only.
- dwpose compute-matched: the same path with stand-in networks of about the real
  networks' multiply-adds (YOLOX-L at 640: ~77.8 GMAC, half of its published 155.6
  GFLOPs; RTMPose-l / DWPose-l at 384x288: ~9.3 GMAC), plain 3x3 conv stacks. An
  estimate of DWPose's CPU speed: the real weights are a download we cannot make here.
- render: draw_pose of one person at 1024x576 (the 2160-px canvas and shrink).
Frames: scikit-image's astronaut (one person) at 512x512 and letterboxed to 1280x720.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def compute_matched_models(directory: str) -> tuple[str, str]:
    """ONNX stand-ins with the release's signatures and about its multiply-adds."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def conv(nodes, inits, x, cin, cout, stride, name):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(9 * cin))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + "_w"))
        nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    def save(nodes, inits, inputs, outputs, path):
        graph = helper.make_graph(nodes, "standin", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        import onnx

        onnx.save(model, path)
        return path

    # detector: stem to 80x80x256, 20 convs 256->256 at 80x80 (~75.5 GMAC), head
    nodes, inits = [], []
    x = conv(nodes, inits, "images", 3, 64, 2, "s1")
    x = conv(nodes, inits, x, 64, 128, 2, "s2")
    x = conv(nodes, inits, x, 128, 256, 2, "s3")
    for i in range(20):
        x = conv(nodes, inits, x, 256, 256, 1, f"b{i}")
    head = (rng.standard_normal((85, 256, 1, 1)) * 1e-3).astype(np.float32)
    inits += [numpy_helper.from_array(head, "head_w"),
              numpy_helper.from_array(np.array([1, 85, -1], np.int64), "shape")]
    nodes += [helper.make_node("Conv", [x, "head_w"], ["h80"]),
              helper.make_node("MaxPool", ["h80"], ["h40"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("MaxPool", ["h40"], ["h20"], kernel_shape=[2, 2], strides=[2, 2])]
    for r in (80, 40, 20):
        nodes.append(helper.make_node("Reshape", [f"h{r}", "shape"], [f"f{r}"]))
    nodes += [helper.make_node("Concat", ["f80", "f40", "f20"], ["cat"], axis=2),
              helper.make_node("Transpose", ["cat"], ["output"], perm=[0, 2, 1])]
    det = save(nodes, inits,
               [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
               [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
               os.path.join(directory, "det_standin.onnx"))

    # pose: stem to 48x36x256, 9 convs 256->256 at 48x36 (~9.2 GMAC), SimCC heads
    nodes, inits = [], []
    x = conv(nodes, inits, "input", 3, 64, 2, "s1")
    x = conv(nodes, inits, x, 64, 128, 2, "s2")
    x = conv(nodes, inits, x, 128, 256, 2, "s3")
    for i in range(9):
        x = conv(nodes, inits, x, 256, 256, 1, f"b{i}")
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gp"]),
              helper.make_node("Flatten", ["gp"], ["feat"])]
    outs = []
    for name, bins in (("simcc_x", 576), ("simcc_y", 768)):
        w = (rng.standard_normal((256, 133 * bins)) * 1e-2).astype(np.float32)
        inits += [numpy_helper.from_array(w, name + "_w"),
                  numpy_helper.from_array(np.array([1, 133, bins], np.int64), name + "_s")]
        nodes += [helper.make_node("MatMul", ["feat", name + "_w"], [name + "_l"]),
                  helper.make_node("Reshape", [name + "_l", name + "_s"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 133, bins]))
    pose = save(nodes, inits,
                [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
                outs, os.path.join(directory, "pose_standin.onnx"))
    return det, pose


def tiny_models(directory: str) -> tuple[str, str]:
    """Random-weight models with one planted person box (so one crop is run)."""
    from controlnext_jax.testing import random_onnx as ro

    prior = ro.empty_detector_prior()
    ro.plant_box(prior, (150, 60, 400, 600), 0.9)
    det = ro.build_detector(os.path.join(directory, "det_tiny.onnx"), prior)
    pose = ro.build_pose(os.path.join(directory, "pose_tiny.onnx"))
    return det, pose


def frames_fixture() -> dict[str, list[np.ndarray]]:
    import cv2
    import skimage.data

    astro = skimage.data.astronaut()
    wide = np.full((720, 1280, 3), 30, np.uint8)
    wide[:, 280:1000] = cv2.resize(astro, (720, 720))
    out = {}
    for name, base in (("512x512", astro), ("1280x720", wide)):
        h, w = base.shape[:2]
        seq = []
        for t in range(8):  # a small drift so tracking has something to follow
            m = np.float32([[1, 0, 3 * t], [0, 1, 2 * t]])
            seq.append(cv2.warpAffine(base, m, (w, h), borderValue=(30, 30, 30)))
        out[name] = seq
    return out


def fps(detect, frames: list[np.ndarray], n: int) -> float:
    detect(frames[0])  # warm-up: sessions, graph, first allocations
    start = time.perf_counter()
    for i in range(n):
        detect(frames[i % len(frames)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="timed frames per row")
    parser.add_argument("--standin-frames", type=int, default=3,
                        help="timed frames for the compute-matched DWPose row")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: default)")
    args = parser.parse_args()

    from controlnext_jax.pose.dwpose import DWPoseDetector
    from controlnext_jax.pose.mediapipe_holistic import MediaPipeHolisticDetector
    from controlnext_jax.pose.render import draw_pose

    frames = frames_fixture()
    rows = []
    for name, seq in frames.items():
        for tracking in (False, True):
            with MediaPipeHolisticDetector(tracking=tracking) as det:
                label = "mediapipe holistic (" + ("tracking" if tracking else "static") + ")"
                rows.append((label, name, fps(det.detect, seq, args.frames)))
    with tempfile.TemporaryDirectory() as d:
        det = DWPoseDetector(*tiny_models(d), device="cpu", num_threads=args.threads)
        for name, seq in frames.items():
            rows.append(("dwpose pipeline, tiny random nets", name, fps(det.detect, seq, args.frames)))
        det = DWPoseDetector(*compute_matched_models(d), device="cpu", num_threads=args.threads)
        for name, seq in frames.items():
            rows.append(("dwpose, compute-matched stand-in nets", name,
                         fps(det.detect, seq, args.standin_frames)))
    with MediaPipeHolisticDetector() as det:
        pose = det.detect(frames["512x512"][0])
    rows.append(("render (draw_pose 1024x576)", "-",
                 fps(lambda _: draw_pose(pose, 1024, 576), [None], args.frames)))

    print(f"cpu cores: {os.cpu_count()}  timed frames: {args.frames} "
          f"(stand-in: {args.standin_frames})")
    print(f"| {'what':40s} | {'frame':9s} | {'frames/s':>8s} | {'ms/frame':>8s} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    for what, frame, v in rows:
        print(f"| {what:40s} | {frame:9s} | {v:8.2f} | {1000 / v:8.1f} |")


if __name__ == "__main__":
    main()
