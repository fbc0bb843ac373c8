"""Our own PyTorch reference of the ControlNeXt-SVD-v2 conditioning module.

Written from docs/release_semantics.md (ControlNeXt module) with diffusers building blocks,
with the same state-dict keys as the release's `controlnet.bin`. Used by the parity
tests and to produce fake `controlnet.bin` files for the conversion tests:

    torch.save(randomize_(TorchControlNeXt(**model_config("controlnext").to_dict())).state_dict(), path)
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn


class TorchControlNeXt(nn.Module):
    """forward(pose (b, f, 3, H, W) in [0, 1], timestep scalar or (b,)) -> (b*f, control_channels, h', w')."""

    def __init__(self, time_embed_dim=256, in_channels=(128, 128), out_channels=(128, 256), groups=(4, 8),
                 control_channels=320, stem_padding=0):
        super().__init__()
        self.time_proj = Timesteps(128, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(128, time_embed_dim)
        stem = in_channels[0]
        self.embedding = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.GroupNorm(2, 64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=stem_padding), nn.GroupNorm(2, 64), nn.ReLU(),
            nn.Conv2d(64, stem, 3, padding=stem_padding), nn.GroupNorm(2, stem), nn.ReLU(),
        )
        self.down_res = nn.ModuleList(
            ResnetBlock2D(in_channels=i, out_channels=o, temb_channels=time_embed_dim, groups=g)
            for i, o, g in zip(in_channels, out_channels, groups))
        self.down_sample = nn.ModuleList(
            Downsample2D(o, use_conv=True, out_channels=o, padding=1, name="op") for o in out_channels)
        w = out_channels[-1]
        self.mid_convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.GroupNorm(8, w),
                          nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w)),
            nn.Conv2d(w, control_channels, 1),
        ])

    def forward(self, pose: torch.Tensor, timestep) -> torch.Tensor:
        b, f = pose.shape[:2]
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(b)
        emb = self.time_embedding(self.time_proj(t).to(pose.dtype)).repeat_interleave(f, dim=0)
        x = self.embedding(pose.flatten(0, 1))
        for res, down in zip(self.down_res, self.down_sample):
            x = down(res(x, emb))
        x = self.mid_convs[0](x) + x
        return self.mid_convs[1](x)


def torch_inject_control(x: torch.Tensor, control: torch.Tensor, scale) -> torch.Tensor:
    """The original's injection arithmetic on NCHW tensors, written from its description:
    control renormalised per frame to x (mean/std over C, H, W; torch's unbiased std; +1e-5),
    adaptive-average pooled to x's size, added with weight scale * 0.2."""
    mx, sx = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
    mc, sc = control.mean(dim=(1, 2, 3), keepdim=True), control.std(dim=(1, 2, 3), keepdim=True)
    c = (control - mc) * (sx / (sc + 1e-5)) + mx
    c = torch.nn.functional.adaptive_avg_pool2d(c, x.shape[-2:])
    return x + c * scale * 0.2


def hook_control_into_unet(unet: nn.Module, control: torch.Tensor, scale):
    """Make diffusers' UNetSpatioTemporalConditionModel behave like the original ControlNeXt UNet:
    down block 0's output gets the injection after its residuals were stored (the skips stay
    control-free). `scale` broadcasts against (b*f, 1, 1, 1). Returns the hook handle (`.remove()`)."""

    def hook(module, args, output):
        sample, residuals = output
        return torch_inject_control(sample, control, scale), residuals

    return unet.down_blocks[0].register_forward_hook(hook)
