"""The GPU suite's code runs in CI: `benchmarks/gpu_suite.py --size toy` on the CPU (tiny model, 64x64).

Every row of the full-size suite must come out measured ("ok"), with the GPU-only figures
(cuDNN attention, device memory statistics) marked "n/a on cpu", so the suite cannot rot
while no GPU is at hand. Slow: it compiles the tiny UNet twice and the tiny pipeline twice
(~90 s on an idle 2-core CPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_suite import ITEMS  # noqa: E402


@pytest.mark.slow
def test_gpu_suite_toy_on_cpu(tmp_path):
    # a budget no CPU run reaches: in CI every item must run (the budget check is for the GPU call)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), str(tmp_path), "--size", "toy",
                           "--budget-s", "5000"], capture_output=True, text=True, cwd=REPO, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.strip() in done.stdout  # printed and written alike
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for label, _ in ITEMS.values():
        assert " | ok | " in rows[label], rows.get(label)
    assert "cuDNN n/a on cpu" in rows["window step: JAX bfloat16, cuDNN attention"]
    for label in ("video: JAX bfloat16, normal mode", "video: JAX memory_saving=True"):
        assert "n/a on cpu" in rows[label]  # device memory
    record = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert set(record["rows"]) == set(ITEMS)
    for name, row in record["rows"].items():
        assert row["status"] == "ok" and row["seconds"] > 0, (name, row)
    # the XLA cost analysis reached the window rows, and the predicted peaks the JAX rows
    assert record["rows"]["window_jax_f32"]["flops"] > 0
    assert record["rows"]["video_memory_saving"]["predicted_gib"] > 0
