"""The ControlNeXt conditioning module of ControlNeXt-SVD-v2 (`ControlNeXtSDVModel`).

Pose frames at pixel resolution -> a control feature per frame that the UNet adds,
renormalised, after its first down block. A small strided CNN whose two residual
stages take the SVD timestep embedding. Parameter paths equal the keys of the
release's `controlnet.bin` (`embedding.3.weight`, `down_res.1.conv_shortcut.bias`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.models.config_dict import config_from_dict
from controlnext_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from controlnext_jax.models.layers import Activation, Conv, Dtype, GroupNorm
from controlnext_jax.models.resnet import Downsample2D, ResnetBlock2D

# Widths and norms the release hard-codes (not in its config.json).
_TIME_PROJ_DIM = 128
_STEM_WIDTH = 64
_STEM_GROUPS = 2
_MID_GROUPS = 8
_TORCH_GN_EPS = 1e-5  # nn.GroupNorm default, used by the stem and the mid convs


@dataclass(frozen=True)
class ControlNeXtConfig:
    """The release's config.json fields plus two of ours.

    `control_channels`: width of the final 1x1 conv (the release hard-codes 320, the
    UNet's first block width). `stem_padding`: padding of the two 3x3 stride-1 stem
    convs; 0 is the inference copy of the release (127x71 at 1024x576), 1 the
    training copy (128x72). The weights have the same shapes either way.
    """

    time_embed_dim: int = 256
    in_channels: tuple[int, ...] = (128, 128)
    out_channels: tuple[int, ...] = (128, 256)
    groups: tuple[int, ...] = (4, 8)
    control_channels: int = 320
    stem_padding: int = 0

    def __post_init__(self):
        n = len(self.in_channels)
        if n == 0 or len(self.out_channels) != n or len(self.groups) != n:
            raise UserError("ControlNeXtConfig: in_channels, out_channels and groups must be non-empty and of "
                             f"equal length, got {self.in_channels}, {self.out_channels}, {self.groups}")
        # each stage consumes the previous one's output; the stem's width is in_channels[0]
        for i in range(1, n):
            if self.in_channels[i] != self.out_channels[i - 1]:
                raise UserError(f"ControlNeXtConfig: in_channels[{i}]={self.in_channels[i]} must equal "
                                 f"out_channels[{i - 1}]={self.out_channels[i - 1]}")
        if self.stem_padding not in (0, 1):
            raise UserError(f"ControlNeXtConfig: stem_padding={self.stem_padding!r} not supported; allowed: [0, 1]")

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> ControlNeXtConfig:
        """From the release's config fields plus ours (the policy of `config_dict`)."""
        return config_from_dict(cls, d, source=source)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class ControlNeXtSDVModel(nnx.Module):
    """Pose video `(b, f, H, W, 3)` in [0, 1] + SVD timestep -> control `(b*f, h', w', control_channels)`.

    The output is the release's `output`; its constant `scale` (1.0) is `self.scale`.
    """

    def __init__(self, config: ControlNeXtConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        c = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        gn = dict(epsilon=_TORCH_GN_EPS, param_dtype=param_dtype, rngs=rngs)
        stem_out = c.in_channels[0]
        p = c.stem_padding

        self.time_embedding = TimestepEmbedding(_TIME_PROJ_DIM, c.time_embed_dim, **kw)
        # nn.Sequential(conv, GN, ReLU) x 3: ReLU positions kept so indices match torch
        self.embedding = nnx.List([
            Conv(3, _STEM_WIDTH, 3, stride=2, padding=1, **kw),
            GroupNorm(_STEM_GROUPS, _STEM_WIDTH, **gn),
            Activation("relu"),
            Conv(_STEM_WIDTH, _STEM_WIDTH, 3, padding=p, **kw),
            GroupNorm(_STEM_GROUPS, _STEM_WIDTH, **gn),
            Activation("relu"),
            Conv(_STEM_WIDTH, stem_out, 3, padding=p, **kw),
            GroupNorm(_STEM_GROUPS, stem_out, **gn),
            Activation("relu"),
        ])
        self.down_res = nnx.List([
            # eps: ResnetBlock2D's default (diffusers'), as in the release
            ResnetBlock2D(cin, cout, temb_channels=c.time_embed_dim, groups=g, **kw)
            for cin, cout, g in zip(c.in_channels, c.out_channels, c.groups)])
        self.down_sample = nnx.List([Downsample2D(cout, cout, padding=1, **kw) for cout in c.out_channels])
        width = c.out_channels[-1]
        self.mid_convs = nnx.List([
            nnx.List([
                Conv(width, width, 3, padding=1, **kw),
                Activation("relu"),
                GroupNorm(_MID_GROUPS, width, **gn),
                Conv(width, width, 3, padding=1, **kw),
                GroupNorm(_MID_GROUPS, width, **gn),
            ]),
            Conv(width, c.control_channels, 1, **kw),
        ])
        self.dtype = dtype or param_dtype
        self.scale = 1.0  # the release's constant control scale (the UNet multiplies by scale * 0.2)

    def __call__(self, pose: jax.Array, timestep: jax.Array | float) -> jax.Array:
        b, f = pose.shape[:2]

        # 1. time embedding, one per video, repeated over its frames (batch-major)
        t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (b,))
        t_emb = timestep_embedding(t, _TIME_PROJ_DIM, flip_sin_to_cos=True, downscale_freq_shift=0.0)
        emb = self.time_embedding(t_emb.astype(self.dtype))
        # (b, d) -> (b*f, d)
        emb = jnp.repeat(emb, f, axis=0)

        # 2. stem: one stride-2 conv, two 3x3 convs (no padding in the inference layout)
        # (b, f, H, W, 3) -> (b*f, H, W, 3)
        x = pose.reshape(b * f, *pose.shape[2:]).astype(self.dtype)
        for layer in self.embedding:
            x = layer(x)

        # 3. residual stages, each followed by a stride-2 conv
        for res, down in zip(self.down_res, self.down_sample):
            x = down(res(x, emb))

        # 4. residual mid block, then the 1x1 projection to the UNet's width
        h = x
        for layer in self.mid_convs[0]:
            h = layer(h)
        return self.mid_convs[1](h + x)
