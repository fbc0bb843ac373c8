"""train/gpu_embedded.sh runs in CI: both training stages at toy size on the CPU, as on the lent GPU
machine, where neither ffmpeg (imageio-ffmpeg) nor mediapipe, wandb or diffusers is installed: an
import hook makes them unimportable here, so the script cannot come to need them unnoticed.
Slow: it compiles the small model's VAE and its UNet step (~3 min on an idle 2-core CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ("imageio_ffmpeg", "mediapipe", "wandb", "diffusers")
BLOCK = f"""
import sys

class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {ABSENT_ON_THE_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")

sys.meta_path.insert(0, _Absent())
"""


@pytest.mark.slow
def test_gpu_embedded_toy_on_cpu(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCK)
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(hook), "PYTHON": sys.executable, "WHEELS": str(tmp_path / "no_wheels"),
           "WORK": str(tmp_path / "work"), "SHARDS": "2", "CLIPS": "4", "FRAMES": "12", "HEIGHT": "64", "WIDTH": "48",
           "VAE_STEPS": "2", "UNET_STEPS": "2", "VAE_S": "900", "UNET_S": "900", "VAE_BATCH": "2", "UNET_BATCH": "2",
           "VAE_CROP": "[32,32]", "WORKERS": "1", "DTYPE": "float32", "STAGE2_OVERRIDES": "control_scale=2.0"}
    check = subprocess.run([sys.executable, "-c", "import imageio_ffmpeg"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "not installed on the GPU machine" in check.stderr  # the hook works
    done = subprocess.run(["bash", str(REPO / "train" / "gpu_embedded.sh"), str(results)], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 clips in" in done.stdout
    assert len(list((tmp_path / "work" / "train" / "videos").glob("s*_train_*.npy"))) == 4
    for stage in ("vae", "unet"):
        records = [json.loads(line) for line in (results / stage / "metrics.jsonl").read_text().splitlines()]
        assert max(r.get("step", 0) for r in records) == 2, records
    assert (results / "loss.png").stat().st_size > 1000
    parts = sorted(results.glob("model.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    whole = tmp_path / "model.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(whole) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    from controlnext_jax.checkpoint.store import read_pipeline

    meta = read_pipeline(tmp_path / "back" / "model")
    assert meta["components"]["vae"]["latent_channels"] == 8
    assert meta["components"]["unet"]["in_channels"] == 16
    assert meta["inference_defaults"]["controlnext_cond_scale"] == 2.0  # STAGE2_OVERRIDES reached stage 2
