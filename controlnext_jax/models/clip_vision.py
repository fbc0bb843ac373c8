"""CLIP vision tower with projection (transformers `CLIPVisionModelWithProjection`).

SVD conditions its UNet on the `image_embeds` of an OpenCLIP ViT-H/14 image encoder
(1280 wide, 32 layers, 1024-d projection, exact-erf GELU). transformers 5 ships no Flax
CLIP, so the tower is written here with the transformers parameter names:
`vision_model.embeddings.{class_embedding, patch_embedding, position_embedding}`,
`vision_model.pre_layrnorm` (sic), `vision_model.encoder.layers.N.{layer_norm1,
self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`, `vision_model.post_layernorm`,
`visual_projection`. The checkpoint buffer `vision_model.embeddings.position_ids` is not a
parameter: positions are always 0..num_patches, as transformers uses them at the
configured image size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from controlnext_jax.errors import UserError
from controlnext_jax.models.attention import attend
from controlnext_jax.models.config_dict import config_from_dict
from controlnext_jax.models.layers import Activation, Conv, Dtype, LayerNorm, Linear
from controlnext_jax.sharding.logical_axes import EMBED, HEADS, MLP, VOCAB, axes_metadata

_ACTIVATIONS = ("gelu", "quick_gelu")
_MODEL_TYPES = ("clip_vision_model", "clip")


@dataclass(frozen=True)
class CLIPVisionConfig:
    """The fields of transformers' CLIPVisionConfig that define the computation.

    Defaults are transformers' defaults, so a config.json that omits a field means the
    same here as there.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.hidden_act not in _ACTIVATIONS:
            raise UserError(f"CLIPVisionConfig: hidden_act={self.hidden_act!r} is not supported; "
                             f"allowed: {list(_ACTIVATIONS)}")
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int):
                raise UserError(f"CLIPVisionConfig: {name}={getattr(self, name)!r} must be an int "
                                 "(square images and patches, as transformers' CLIP embeddings assume)")
        if self.image_size % self.patch_size:
            raise UserError(f"CLIPVisionConfig: image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"CLIPVisionConfig: hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> CLIPVisionConfig:
        """From an image encoder's config.json (model_type `clip_vision_model`) or a full
        CLIPConfig (model_type `clip`), whose `vision_config` is used as transformers does
        (the policy of `config_dict`)."""
        if isinstance(d, Mapping):
            where = f"{source}: CLIPVisionConfig" if source else "CLIPVisionConfig"
            d = dict(d)
            model_type = d.pop("model_type", None)
            if model_type is not None and model_type not in _MODEL_TYPES:
                raise UserError(f"{where}: model_type={model_type!r} is not supported; allowed: {list(_MODEL_TYPES)}")
            if model_type == "clip" or "vision_config" in d:
                vision = d.get("vision_config") or {}
                if not isinstance(vision, Mapping):
                    raise UserError(f"{where}: vision_config={vision!r} must be a mapping")
                d = dict(vision)
                if d.pop("model_type", _MODEL_TYPES[0]) != _MODEL_TYPES[0]:
                    raise UserError(f"{where}: vision_config.model_type must be {_MODEL_TYPES[0]!r}")
        return config_from_dict(cls, d, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "clip_vision_model", **dataclasses.asdict(self)}


class CLIPVisionEmbeddings(nnx.Module):
    """[CLS] + non-overlapping patch projections, plus learned absolute positions."""

    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.image_size = config.image_size
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (config.hidden_size,), param_dtype),
                                         **axes_metadata(EMBED))
        self.patch_embedding = Conv(config.num_channels, config.hidden_size, config.patch_size,
                                    stride=config.patch_size, use_bias=False, dtype=dtype,
                                    param_dtype=param_dtype, rngs=rngs)
        self.position_embedding = nnx.Embed(num_positions, config.hidden_size, dtype=dtype,
                                            param_dtype=param_dtype, embedding_metadata=axes_metadata(VOCAB, EMBED),
                                            rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        n, h, w, _ = pixel_values.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"CLIP: input image size ({h}*{w}) does not match the model ({self.image_size}*"
                             f"{self.image_size})")
        patches = self.patch_embedding(pixel_values)
        # (n, h/p, w/p, d) -> (n, h/p * w/p, d), row-major as torch's flatten(2)
        patches = patches.reshape(n, -1, patches.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (n, 1, patches.shape[-1]))
        x = jnp.concatenate([cls, patches], axis=1)
        return x + self.position_embedding(jnp.arange(x.shape[1]))


class CLIPAttention(nnx.Module):
    """Bidirectional multi-head self-attention with q_proj/k_proj/v_proj/out_proj.

    `implementation` selects the attention backend as the shared `Attention.implementation`
    does (`attention.attend`: einsums on CPU, `jax.nn.dot_product_attention` elsewhere).
    """

    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        d = config.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = config.num_attention_heads
        self.implementation: str | None = None
        self.k_proj = Linear(d, d, axes=(EMBED, HEADS), **kw)
        self.v_proj = Linear(d, d, axes=(EMBED, HEADS), **kw)
        self.q_proj = Linear(d, d, axes=(EMBED, HEADS), **kw)
        self.out_proj = Linear(d, d, axes=(HEADS, EMBED), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        # (n, t, d) -> (n, t, heads, d/heads)
        q, k, v = (p(x).reshape(n, t, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = attend(q, k, v, self.implementation)
        # (n, t, heads, d/heads) -> (n, t, d)
        return self.out_proj(out.reshape(n, t, d))


class CLIPMLP(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, **kw)
        self.activation_fn = Activation(config.hidden_act)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, axes=(MLP, EMBED), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.activation_fn(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ln = dict(epsilon=config.layer_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = CLIPAttention(config, **kw)
        self.layer_norm1 = LayerNorm(config.hidden_size, **ln)
        self.mlp = CLIPMLP(config, **kw)
        self.layer_norm2 = LayerNorm(config.hidden_size, **ln)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.layers = nnx.List([CLIPEncoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionModel(nnx.Module):
    """Embeddings -> pre_layrnorm -> encoder -> post_layernorm of the [CLS] token."""

    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ln = dict(epsilon=config.layer_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = CLIPVisionEmbeddings(config, **kw)
        self.pre_layrnorm = LayerNorm(config.hidden_size, **ln)
        self.encoder = CLIPEncoder(config, **kw)
        self.post_layernorm = LayerNorm(config.hidden_size, **ln)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        x = self.pre_layrnorm(self.embeddings(pixel_values))  # (n, 1 + patches, d)
        x = self.encoder(x)
        return self.post_layernorm(x[:, 0])  # (n, d)


class CLIPVisionModelWithProjection(nnx.Module):
    """`pixel_values` (n, image_size, image_size, channels), CLIP-normalised, channels-last
    -> `image_embeds` (n, projection_dim) = visual_projection(pooled [CLS])."""

    def __init__(self, config: CLIPVisionConfig, *, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.vision_model = CLIPVisionModel(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.visual_projection = Linear(config.hidden_size, config.projection_dim, use_bias=False,
                                        dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        # 1. the tower runs in the compute dtype (the parameters' when none is set)
        dtype = self.dtype or self.visual_projection.kernel[...].dtype
        pooled = self.vision_model(pixel_values.astype(dtype))  # (n, hidden_size)
        # 2. project into the joint image/text space that SVD's cross-attention reads
        return self.visual_projection(pooled)  # (n, projection_dim)
