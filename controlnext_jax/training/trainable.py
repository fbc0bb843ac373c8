"""Which parameters train (docs/release_semantics.md, Training).

The ControlNeXt module always trains. Of the UNet, the release trains everything (pattern
"*"); its code also carries, commented out, a selection of attention projections
("*to_out*", "*to_v*"), which `unet_patterns` expresses; no pattern trains the module alone.
Patterns are shell globs (fnmatch) over the torch-style dotted parameter path,
e.g. "down_blocks.0.attentions.*.to_v.kernel".
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from flax import nnx

from controlnext_jax.errors import UserError

RELEASE_UNET_PATTERNS = ("*",)  # the release trains the whole UNet
MODULE_ONLY = ()


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def param_filter(patterns: Sequence[str]):
    """An nnx filter: parameters whose dotted path matches one of `patterns`."""
    patterns = tuple(patterns)

    def matches(path: tuple, value) -> bool:
        return any(fnmatchcase(dotted(path), p) for p in patterns)

    return nnx.All(nnx.Param, matches)


# the VAE parameters between an image and its latents: while none of them trains, the latent
# space (and the scaling factor measured on it) is the checkpoint's
VAE_LATENT_PATH = ("encoder.", "quant_conv.")


def matching_paths(model: nnx.Module, patterns: Sequence[str]) -> list[str]:
    """Dotted paths of `model`'s parameters that `patterns` select."""
    return [dotted(path) for path, _ in nnx.to_flat_state(nnx.state(model, param_filter(patterns)))]


def require_vae_matches(vae: nnx.Module, patterns: Sequence[str]) -> None:
    """A UserError when `patterns` (vae_patterns) select none of `vae`'s parameters (abstract or real)."""
    if not matching_paths(vae, patterns):
        raise UserError(f"vae_patterns={list(patterns)}: match no VAE parameter (paths look like "
                        "'decoder.up_blocks.0.resnets.0.conv1.kernel'; ['decoder.*'] is the decoder alone)")


def trains_vae_latents(vae: nnx.Module, patterns: Sequence[str]) -> bool:
    """Whether training `patterns` of `vae` changes what it encodes images to."""
    return any(p.startswith(VAE_LATENT_PATH) for p in matching_paths(vae, patterns))


def split_trainable(model: nnx.Module, patterns: Sequence[str]):
    """model -> (graphdef, trainable State, frozen State); merge back with nnx.merge(graphdef, t, f)."""
    return nnx.split(model, param_filter(patterns), ...)
