"""The embedded model: a small ControlNeXt-SVD that controlnext-train trained from scratch on
synthetic figures (docs/embedded_model.md), shipped inside the package with an example, so that
`controlnext-animate` animates something real on a fresh machine with no checkpoint to fetch.

    checkpoint/   a converted checkpoint (pipeline.json + one params.safetensors per component,
                  bfloat16), loaded by the same `load_pipeline` as any other; its pipeline.json
                  carries the animate settings it was trained for (`inference_defaults`)
    example/      a held-out synthetic identity and motion (train/package_embedded.py):
                  reference.png (its frame 0), clip.mp4 (the rendered clip: a driving video
                  and the ground truth), poses.mp4 (every second pose frame, the reference
                  pose first) and masks.npz (the figure in every frame of clip.mp4)
"""

from __future__ import annotations

from pathlib import Path

from controlnext_jax.errors import UserError

EMBEDDED_DIR = Path(__file__).resolve().parent
CHECKPOINT_DIR = EMBEDDED_DIR / "checkpoint"
EXAMPLE_DIR = EMBEDDED_DIR / "example"
MAX_BYTES = 40 * 10**6  # what the package may carry here: the model, its example and its card
EXAMPLE = {"image": EXAMPLE_DIR / "reference.png", "video": EXAMPLE_DIR / "clip.mp4",
           "pose_video": EXAMPLE_DIR / "poses.mp4", "masks": EXAMPLE_DIR / "masks.npz"}


def stored_bytes() -> int:
    """The size of everything in this folder (checkpoint, example, card), as installed."""
    return sum(p.stat().st_size for p in EMBEDDED_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def checkpoint() -> Path:
    """The embedded model's checkpoint folder (a UserError when this install lacks it)."""
    if not (CHECKPOINT_DIR / "pipeline.json").is_file():
        raise UserError(f"ckpt=null: the embedded model is missing from this install ({CHECKPOINT_DIR}); "
                        "give ckpt=<a converted checkpoint>")
    return CHECKPOINT_DIR


def example(name: str) -> Path:
    """One of the bundled example's files: "image", "video", "pose_video" or "masks"."""
    path = EXAMPLE[name]
    if not path.is_file():
        raise UserError(f"example=true: the bundled example is missing from this install ({path})")
    return path
