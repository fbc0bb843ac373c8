#!/usr/bin/env bash
# Prepare ./wheels for benchmarks/gpu_suite.sh and train/gpu_embedded.sh on a machine with network
# access: the packages the GPU machine lacks (it has Python 3.12 with jax, flax, optax, orbax, torch,
# transformers, absl-py, cloudpickle, etils and protobuf, and no network), for CPython 3.12, without
# their dependencies, at the versions installed beside this script's Python (the ones the tests
# ran with): diffusers (the suite's PyTorch rows), hydra-core and omegaconf (every command), grain
# with array-record, dm-tree and more-itertools (the training loader). About 12 MB. Not this
# project's own wheel: it holds the embedded checkpoint (35 MB), and the device call carries at
# most 64 MiB in all, the tracked tree (about 40 MB) included; both scripts import the checkout's
# package instead.
#   bash benchmarks/gpu_wheels.sh [WHEELS_DIR]      (default: ./wheels, which the device copy carries)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/wheels}
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any -d "$out" \
  $(for p in diffusers hydra-core omegaconf grain array-record dm-tree more-itertools; do
      echo "$p==$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")"; done)
# antlr4-python3-runtime 4.9.3 (the version omegaconf pins) is published as a source archive
# only: built into a pure-Python wheel here
"$python" -m pip wheel --no-deps -w "$out" antlr4-python3-runtime==4.9.3
du -ch "$out"/*.whl | tail -1
ls -l "$out"
