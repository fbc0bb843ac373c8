#!/usr/bin/env bash
# The GPU suite in one device call (BENCHMARKS.md, GPU suite: how to run):
#   bash benchmarks/gpu_suite.sh RESULTS_DIR [--size full|toy] [more gpu_suite.py options]
# Installs the wheels the caller prepared in ./wheels (benchmarks/gpu_wheels.sh: diffusers,
# hydra-core, omegaconf, antlr4-python3-runtime; the machine has no network; the package itself is
# the checkout's),
# without dependencies and without an index, then runs benchmarks/gpu_suite.py under a global
# time budget: items that would end after 450 s are skipped (marked), and the whole run is
# stopped at 470 s; the table is rewritten after every item, so what was measured stays.
set -euo pipefail
results=${1:?usage: gpu_suite.sh RESULTS_DIR [--size full|toy] [...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
wheels=${WHEELS:-$here/wheels}
mkdir -p "$results"
if compgen -G "$wheels/*.whl" > /dev/null; then
  "$python" -m pip install --quiet --no-deps --no-index "$wheels"/*.whl
else
  echo "[gpu_suite.sh] no wheels in $wheels: using what is installed" >&2
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the device
cd "$here"
timeout --signal=TERM 470 "$python" benchmarks/gpu_suite.py "$results" --size full --budget-s 450 "$@" \
  2> >(tee "$results/gpu_suite.log" >&2)
