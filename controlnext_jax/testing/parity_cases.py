"""One forward pass of each converted component against the PyTorch module it came from.

Each case draws fresh random inputs, runs both frameworks in float32 and returns
`(ours, reference)` as channels-last numpy arrays. Shared by the conversion tests and
`controlnext-selfcheck`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx


def to_nhwc(x: torch.Tensor) -> np.ndarray:
    """(..., c, h, w) -> (..., h, w, c)."""
    return np.moveaxis(x.detach().float().numpy(), -3, -1)


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape mismatch: ours {out.shape} vs reference {ref.shape}")
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


@functools.partial(nnx.jit, static_argnames=("method", "static"))
def _call(model, *args, method: str = "__call__", static: tuple = ()):
    """model.method(*args, *static) under jit (one compile instead of op-by-op dispatch)."""
    return getattr(model, method)(*args, *static)


def controlnext_case(ours, ref, g: torch.Generator, *, frames: int = 3, size=(64, 48)):
    pose = torch.rand(2, frames, 3, *size, generator=g)
    t = torch.randn(2, generator=g)
    with torch.no_grad():
        expected = ref(pose, t)
    return np.asarray(_call(ours, jnp.asarray(to_nhwc(pose)), jnp.asarray(t.numpy()))), to_nhwc(expected)


def vae_encode_case(ours, ref, g: torch.Generator, *, frames: int = 2, size=(48, 40)):
    x = torch.rand(frames, 3, *size, generator=g) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.mode()
    return np.asarray(_call(ours, jnp.asarray(to_nhwc(x)), method="encode_mode")), to_nhwc(expected)


def vae_decode_case(ours, ref, g: torch.Generator, *, frames: int = 3, size=(6, 5)):
    z = torch.randn(frames, ref.config.latent_channels, *size, generator=g)
    with torch.no_grad():
        expected = ref.decode(z, num_frames=frames).sample
    return np.asarray(_call(ours, jnp.asarray(to_nhwc(z)), method="decode", static=(frames,))), to_nhwc(expected)


def clip_case(ours, ref, g: torch.Generator, *, batch: int = 2):
    size = ref.config.image_size
    x = torch.randn(batch, 3, size, size, generator=g)
    with torch.no_grad():
        expected = ref(pixel_values=x).image_embeds
    return np.asarray(_call(ours, jnp.asarray(to_nhwc(x)))), expected.numpy()


def unet_case(ours, ref, g: torch.Generator, *, frames: int = 3, size=(8, 6)):
    cfg = ref.config
    sample = torch.randn(1, frames, cfg.in_channels, *size, generator=g)
    t = torch.randn(1, generator=g)
    context = torch.randn(1, 1, cfg.cross_attention_dim, generator=g)
    added = torch.tensor([[5.0, 127.0, 0.02]])
    with torch.no_grad():
        expected = ref(sample, t, context, added).sample
    out = _call(ours, jnp.asarray(to_nhwc(sample)), jnp.asarray(t.numpy()), jnp.asarray(context.numpy()),
                jnp.asarray(added.numpy()))
    return np.asarray(out), to_nhwc(expected)


def unet_control_case(ours, ref, g: torch.Generator, *, frames: int = 3, size=(8, 6), scales=(0.0, 1.5)):
    """A CFG-style batch of two videos, the first with control scale 0; the control map is
    (2h' - 1, 2w' - 1) against down block 0's (h', w') output, as at 1024x576 (127x71 vs 64x36)."""
    from controlnext_jax.testing.torch_controlnext import hook_control_into_unet

    cfg = ref.config
    b = len(scales)
    sample = torch.randn(b, frames, cfg.in_channels, *size, generator=g)
    t = torch.randn(1, generator=g).expand(b)
    context = torch.randn(b, 1, cfg.cross_attention_dim, generator=g)
    added = torch.tensor([[5.0, 127.0, 0.02]]).expand(b, 3)
    control = torch.randn(b * frames, cfg.block_out_channels[0], size[0] - 1, size[1] - 1, generator=g)
    scale = torch.tensor(scales, dtype=torch.float32).repeat_interleave(frames)[:, None, None, None]
    handle = hook_control_into_unet(ref, control, scale)
    try:
        with torch.no_grad():
            expected = ref(sample, t, context, added).sample
    finally:
        handle.remove()
    out = _call(ours, jnp.asarray(to_nhwc(sample)), jnp.asarray(t.numpy()), jnp.asarray(context.numpy()),
                jnp.asarray(added.numpy()), jnp.asarray(to_nhwc(control)), jnp.asarray(scales, jnp.float32))
    return np.asarray(out), to_nhwc(expected)


CASES: dict[str, tuple[str, Callable]] = {
    "controlnext": ("controlnext", controlnext_case),
    "vae.encode": ("vae", vae_encode_case),
    "vae.decode": ("vae", vae_decode_case),
    "image_encoder": ("image_encoder", clip_case),
    "unet": ("unet", unet_case),
    "unet+control": ("unet", unet_control_case),
}
