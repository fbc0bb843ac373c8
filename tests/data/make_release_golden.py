"""Write the golden files that tie our ControlNeXt module and control injection to the original release.

    python tests/data/make_release_golden.py RELEASE_DIR [--training-dir DIR] [--release-commit SHA]

RELEASE_DIR is the `ControlNeXt-SVD-v2` folder of a checkout of
github.com/dvlab-research/ControlNeXt; `--training-dir` defaults to its sibling
`ControlNeXt-SVD-v2-Training`. The release's own code is imported from there at generation
time (nothing of it is copied into this project) and run in float32 on the CPU on small
random weights and random inputs with fixed seeds. Written next to this script:

- `release_controlnext.npz`: the release's `ControlNeXtSDVModel` (its `models/controlnext_vid_svd.py`)
  at a tiny config, run by the inference copy (stem convs unpadded) and by the training copy
  (stem convs padded by 1) on the same weights and inputs.
- `release_unet_control.npz`: the release's `UNetSpatioTemporalConditionControlNeXtModel`
  (its `models/unet_spatio_temporal_condition_controlnext.py`) at a tiny config, run with a
  control map and a per-frame control scale built as its pipeline builds them (CFG batch:
  the unconditional half gets scale 0). Besides the UNet output, the tensors entering and
  leaving the control injection (down block 0's output, and down block 1's input) are
  captured with hooks.

Keys of each npz: `meta` (a JSON string: release commit, sha256 of the release files run,
config, seeds, versions), `weight/<state-dict key>` (float16: the random weights are drawn as
float16 values and used at that value, so float16 storage is exact; see `_randomize_fp16_`),
`input/<name>`, `output/<name>` (float32, PyTorch NCHW layouts).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch

OUT_DIR = Path(__file__).resolve().parent
SEED = 20240814
CONTROLNEXT_CONFIG = {"time_embed_dim": 32, "in_channels": [128, 16], "out_channels": [16, 32], "groups": [4, 8]}
# two blocks so that block 0 has a downsampler and block 1 consumes the injected sample; no
# cross-attention in the down/up blocks (the mid block has it) to keep the file under 1 MB
UNET_CONFIG = {
    "sample_size": 8, "in_channels": 8, "out_channels": 4,
    "down_block_types": ["DownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal", "UpBlockSpatioTemporal"],
    "block_out_channels": [32, 32], "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 12,
    "layers_per_block": 1, "cross_attention_dim": 8, "transformer_layers_per_block": 1,
    "num_attention_heads": [2, 2], "num_frames": 25,
}


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _release_commit(release_dir: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(release_dir), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"{release_dir} is not a git checkout: pass --release-commit SHA")


def _coarse_float16(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest float16 whose low byte is zero (3 significant bits): still random
    values, but the low byte of every stored float16 compresses away, so the UNet's file
    stays well under 1 MB."""
    bits = x.half().numpy().view(np.uint16).astype(np.uint32)
    coarse = ((bits + 0x80) & 0xFF00).astype(np.uint16).view(np.float16)
    return torch.from_numpy(coarse.astype(np.float32))


def _randomize_fp16_(module: torch.nn.Module, seed: int) -> dict[str, np.ndarray]:
    """Fresh random parameters: norm scales around 1, biases around 0 (both at full float16
    precision, so none sits at an initialisation value such as exactly 1 or 0, which could
    hide a bug), matrices and kernels with fan-in scaling at 3 significant bits. Every value
    is a float16 and used at that value; returned keyed by state-dict name, as float16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.copy_((1.0 + 0.2 * torch.randn(p.shape, generator=g)).half().float())
            elif p.ndim > 1:
                p.copy_(_coarse_float16(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:]))))
            else:
                p.copy_((0.2 * torch.randn(p.shape, generator=g)).half().float())
    # buffers would not be covered by the weights we store
    assert not list(module.buffers()), [n for n, _ in module.named_buffers()]
    return {f"weight/{k}": p.detach().half().numpy() for k, p in module.named_parameters()}


def _save(name: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    path = OUT_DIR / name
    np.savez_compressed(path, meta=np.array(json.dumps(meta, indent=1, sort_keys=True)), **arrays)
    print(f"{path}: {path.stat().st_size / 1e3:.0f} kB, {len(arrays)} arrays")


def controlnext_golden(inference: Path, training: Path, meta: dict) -> None:
    release = {"inference": _import(inference, "release_controlnext_inference"),
               "training": _import(training, "release_controlnext_training")}
    models = {k: m.ControlNeXtSDVModel(**CONTROLNEXT_CONFIG).eval() for k, m in release.items()}
    weights = _randomize_fp16_(models["inference"], SEED)
    models["training"].load_state_dict(models["inference"].state_dict(), strict=True)

    g = torch.Generator().manual_seed(SEED + 1)
    # two videos of two frames, non-square, odd sizes after each stride; SVD-range timesteps, one per video
    pose = torch.rand(2, 2, 3, 30, 22, generator=g)
    timestep = torch.tensor([1.63, -1.2])
    arrays = {**weights, "input/pose": pose.numpy(), "input/timestep": timestep.numpy()}
    with torch.no_grad():
        for layout, model in models.items():
            out = model(pose, timestep)
            assert out["scale"] == 1.0
            arrays[f"output/{layout}"] = out["output"].numpy()
    _save("release_controlnext.npz", {
        **meta, "config": CONTROLNEXT_CONFIG, "seed": SEED,
        "release_files": {"inference": {"path": "ControlNeXt-SVD-v2/models/controlnext_vid_svd.py",
                                        "sha256": _sha256(inference), "stem_padding": 0},
                          "training": {"path": "ControlNeXt-SVD-v2-Training/models/controlnext_vid_svd.py",
                                       "sha256": _sha256(training), "stem_padding": 1}},
        "inputs": "pose (b, f, 3, H, W) in [0, 1]; timestep (b,)",
        "outputs": "the release's output['output'] (b*f, 320, h, w) for each layout"}, arrays)


def unet_control_golden(unet_file: Path, meta: dict) -> None:
    release = _import(unet_file, "release_unet_controlnext")
    unet = release.UNetSpatioTemporalConditionControlNeXtModel(**UNET_CONFIG).eval()
    weights = _randomize_fp16_(unet, SEED + 2)

    g = torch.Generator().manual_seed(SEED + 3)
    b, f, h, w = 2, 3, 8, 6
    sample = torch.randn(b, f, UNET_CONFIG["in_channels"], h, w, generator=g)
    timestep = torch.tensor([0.83, 0.83])
    context = torch.randn(b, 1, UNET_CONFIG["cross_attention_dim"], generator=g)
    added_time_ids = torch.tensor([[6.0, 127.0, 0.02]]).expand(b, 3).contiguous()
    # down block 0 ends at (h/2, w/2) = 4x3; the control is (2h' - 1, 2w' - 1), as 127x71 against
    # 64x36 at 1024x576, so the adaptive pooling bins overlap; mean and std away from 0 and 1
    control = torch.randn(b * f, UNET_CONFIG["block_out_channels"][0], 7, 5, generator=g) * 0.5 + 0.3
    # as the release's pipeline: the module's scale (1.0) per frame, zeroed for the first (unconditional) half
    scale = torch.tensor(1.0).repeat(b * f)[:, None, None, None]
    scale[: b * f // 2] *= 0

    captured = {}
    hooks = [
        unet.down_blocks[0].register_forward_hook(lambda m, args, out: captured.__setitem__("x", out[0])),
        unet.down_blocks[1].register_forward_pre_hook(
            lambda m, args, kwargs: captured.__setitem__("injected", kwargs["hidden_states"]), with_kwargs=True),
    ]
    with torch.no_grad():
        out = unet(sample, timestep, context, added_time_ids=added_time_ids,
                   conditional_controls={"output": control, "scale": scale}).sample
        for hook in hooks:
            hook.remove()
        plain = unet(sample, timestep, context, added_time_ids=added_time_ids).sample
    # the injection happened between the hooks: the scale-1 frames changed, the scale-0 frames did not
    changed = (captured["injected"] != captured["x"]).flatten(1).any(1)
    assert changed.tolist() == (scale.flatten() != 0).tolist()
    # the scale-0 video is the uncontrolled output, the other differs from it
    assert torch.equal(out[0], plain[0]) and not torch.allclose(out[1], plain[1], atol=1e-3)

    arrays = {**weights, "input/sample": sample.numpy(), "input/timestep": timestep.numpy(),
              "input/encoder_hidden_states": context.numpy(), "input/added_time_ids": added_time_ids.numpy(),
              "input/control": control.numpy(), "input/scale": scale.flatten().numpy(),
              "output/sample": out.numpy(), "output/sample_without_control": plain.numpy(),
              "injection/x": captured["x"].numpy(), "injection/out": captured["injected"].numpy()}
    _save("release_unet_control.npz", {
        **meta, "config": UNET_CONFIG, "seed": SEED,
        "release_files": {"unet": {"path": "ControlNeXt-SVD-v2/models/unet_spatio_temporal_condition_controlnext.py",
                                   "sha256": _sha256(unet_file)}},
        "inputs": "the UNet's sample (b, f, c, h, w), timestep (b,), encoder_hidden_states (b, 1, d), "
                  "added_time_ids (b, 3); conditional_controls = {output: control (b*f, c0, hc, wc), "
                  "scale: scale (b*f,) as (b*f, 1, 1, 1)}",
        "outputs": "output/sample: the UNet's sample; output/sample_without_control: the same call without "
                   "conditional_controls; injection/x: down block 0's output (before the "
                   "injection), injection/out: down block 1's input (after it)"}, arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release_dir", type=Path, help="the ControlNeXt-SVD-v2 folder of a release checkout")
    parser.add_argument("--training-dir", type=Path, help="default: the sibling ControlNeXt-SVD-v2-Training")
    parser.add_argument("--release-commit", help="recorded in the files; default: git rev-parse HEAD there")
    args = parser.parse_args()
    release_dir = args.release_dir.resolve()
    training_dir = (args.training_dir or release_dir.parent / "ControlNeXt-SVD-v2-Training").resolve()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one summation order, whatever the machine
    meta = {"release": "github.com/dvlab-research/ControlNeXt",
            "release_commit": _release_commit(release_dir, args.release_commit),
            "generator": "tests/data/make_release_golden.py", "torch": torch.__version__,
            "diffusers": diffusers.__version__, "numpy": np.__version__}
    controlnext_golden(release_dir / "models" / "controlnext_vid_svd.py",
                       training_dir / "models" / "controlnext_vid_svd.py", meta)
    unet_control_golden(release_dir / "models" / "unet_spatio_temporal_condition_controlnext.py", meta)


if __name__ == "__main__":
    main()
