"""Put a trained model and a held-out example into the package (controlnext_jax/embedded/).

    python train/package_embedded.py --model runs/embedded_unet/model \
        --heldout data/synth_heldout --clip heldout_000004_id1000071_jump

The model must be a safetensors export (export.storage=safetensors, as configs/experiment/
embedded_unet.yaml writes it); with the example it must stay within MAX_BYTES. The example is
one clip of a held-out synthetic split (controlnext-synth split=heldout): its frame 0 as the
reference image, the clip itself (the driving video and the ground truth), every `stride`-th pose
frame from frame 0 as the pose video (its first frame the reference pose, as animate's
pose_video= wants) and the figure masks of the clip.
"""

import argparse
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from controlnext_jax.checkpoint.store import PIPELINE_FILE, SAFETENSORS_FILE, read_pipeline
from controlnext_jax.embedded import CHECKPOINT_DIR, EXAMPLE, EXAMPLE_DIR, MAX_BYTES, stored_bytes
from controlnext_jax.pose.media import read_video, write_video


def package_model(model: Path) -> None:
    meta = read_pipeline(model)
    names = list(meta["components"])
    for name in names:
        if not (model / name / SAFETENSORS_FILE).is_file():
            sys.exit(f"{model / name}: no {SAFETENSORS_FILE} (export with export.storage=safetensors)")
    if CHECKPOINT_DIR.exists():
        shutil.rmtree(CHECKPOINT_DIR)
    CHECKPOINT_DIR.mkdir(parents=True)
    shutil.copy2(model / PIPELINE_FILE, CHECKPOINT_DIR / PIPELINE_FILE)
    for name in names:
        (CHECKPOINT_DIR / name).mkdir()
        shutil.copy2(model / name / SAFETENSORS_FILE, CHECKPOINT_DIR / name / SAFETENSORS_FILE)


def package_example(heldout: Path, clip: str, stride: int) -> None:
    EXAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    frames = read_video(heldout / "videos" / f"{clip}.mp4")
    poses = read_video(heldout / "poses" / f"{clip}.mp4")
    fps = 15 / stride
    iio.imwrite(EXAMPLE["image"], frames[0])
    shutil.copy2(heldout / "videos" / f"{clip}.mp4", EXAMPLE["video"])
    write_video(EXAMPLE["pose_video"], list(poses[::stride]), fps=fps)
    masks = np.load(heldout / "masks" / f"{clip}.npz")["masks"]
    np.savez_compressed(EXAMPLE["masks"], masks=masks)
    (EXAMPLE_DIR / "SOURCE.txt").write_text(
        f"held-out synthetic clip {clip} (controlnext-synth split=heldout, docs/embedded_model.md); "
        f"poses.mp4 = the pose frames 0, {stride}, {2 * stride}, ... of the clip\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a safetensors export (<run>/model)")
    parser.add_argument("--heldout", type=Path, help="a controlnext-synth split=heldout folder")
    parser.add_argument("--clip", help="the held-out clip's name")
    parser.add_argument("--stride", type=int, default=2, help="pose frames kept (animate's sample_stride)")
    args = parser.parse_args()
    if args.model:
        package_model(args.model)
    if args.heldout:
        package_example(args.heldout, args.clip, args.stride)
    total = stored_bytes()
    print(f"controlnext_jax/embedded: {total / 1e6:.1f} MB")
    if total > MAX_BYTES:
        sys.exit(f"controlnext_jax/embedded holds {total / 1e6:.1f} MB, above {MAX_BYTES / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
