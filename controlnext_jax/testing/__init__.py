"""Stand-ins for tests, the self-check and benchmarks: random-weight PyTorch checkpoints and
reference modules (need the `torch` extra) and random-weight ONNX models with DWPose's
signatures (need `onnx`)."""
