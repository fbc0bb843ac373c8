"""Write random-weight PyTorch checkpoints in the layouts users bring.

`write_svd_folder` produces a Stable Video Diffusion folder in the diffusers layout
(`unet/`, `vae/`, `image_encoder/`, `scheduler/`, `feature_extractor/`) through the real
`save_pretrained` of diffusers/transformers; `write_controlnext_file` a ControlNeXt state
dict like the release's `controlnet.bin`; `write_unet_override` a partial UNet state dict
like its `unet.bin`. Model sizes come from `configs/model/<name>.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from controlnext_jax.cli import CONFIG_DIR
from controlnext_jax.models.clip_preprocess import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.testing.torch_random import randomize_

MODEL_CONFIG_DIR = CONFIG_DIR / "model"


def model_configs(name: str = "tiny") -> dict:
    """The component configs of `configs/model/<name>.yaml`."""
    return with_scheduler(yaml.safe_load((MODEL_CONFIG_DIR / f"{name}.yaml").read_text()))


def model_config(component: str, name: str = "tiny"):
    """One component's parsed config (`UNetConfig`, ...) from `configs/model/<name>.yaml`: the
    one definition of the tiny test model and of the full-size one."""
    return COMPONENTS[component].config_from_dict(model_configs(name)[component])


def with_scheduler(configs: dict) -> dict:
    """Sizeless model configs (tiny.yaml) share SVD-XT's scheduler."""
    if "scheduler" not in configs:
        configs = {**configs, "scheduler": yaml.safe_load((MODEL_CONFIG_DIR / "svd_xt.yaml").read_text())["scheduler"]}
    return configs


def torch_models(configs: dict, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Random-weight torch modules of the UNet, VAE, CLIP vision tower and ControlNeXt."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from controlnext_jax.testing.torch_controlnext import TorchControlNeXt

    clip_fields = {k: v for k, v in configs["image_encoder"].items() if k not in ("architectures", "model_type")}
    controlnext_fields = {k: v for k, v in configs["controlnext"].items() if not k.startswith("_")}
    return {
        "unet": randomize_(UNetSpatioTemporalConditionModel.from_config(configs["unet"]), seed),
        "vae": randomize_(AutoencoderKLTemporalDecoder.from_config(configs["vae"]), seed + 1),
        "image_encoder": randomize_(CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_fields)), seed + 2),
        "controlnext": randomize_(TorchControlNeXt(**controlnext_fields), seed + 3),
    }


def write_svd_folder(root: str | Path, models: dict[str, torch.nn.Module], configs: dict, *,
                     variant: str | None = None) -> Path:
    """save_pretrained of each component into `root` (variant="fp16" writes fp16 weight files)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPImageProcessor

    root = Path(root)
    for name in ("unet", "vae", "image_encoder"):
        module = models[name]
        if variant == "fp16":
            module = _half_copy(module)
        module.save_pretrained(root / name, safe_serialization=True, variant=variant)
    EulerDiscreteScheduler.from_config(configs["scheduler"]).save_pretrained(root / "scheduler")
    CLIPImageProcessor(crop_size=CLIP_IMAGE_SIZE, size={"shortest_edge": CLIP_IMAGE_SIZE},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(root / "feature_extractor")
    return root


def write_controlnext_file(path: str | Path, controlnext: torch.nn.Module) -> Path:
    """The ControlNeXt state dict as the release ships it (`torch.save`, or safetensors by suffix)."""
    path = Path(path)
    state = {k: v.detach().clone() for k, v in controlnext.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def write_unet_override(path: str | Path, unet: torch.nn.Module, *, every: int = 3, seed: int = 100,
                        half: bool = True) -> tuple[Path, dict[str, torch.Tensor]]:
    """A partial UNet state dict (every `every`-th key, new random values, fp16 like the release's
    `unet.bin`). Returns the path and the override tensors."""
    g = torch.Generator().manual_seed(seed)
    state = unet.state_dict()
    override = {}
    for i, key in enumerate(state):
        if i % every == 0:
            value = state[key] + 0.05 * torch.randn(state[key].shape, generator=g)
            override[key] = value.half() if half else value
    torch.save(override, path)
    return Path(path), override


def _half_copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).half()
