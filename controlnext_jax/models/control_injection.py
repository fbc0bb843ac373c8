"""ControlNeXt's injection of the control feature into the UNet (after down block 0).

The original (`unet_spatio_temporal_condition_controlnext.py`, forward, `idx == 0`)
renormalises the control map per frame to the statistics of the UNet activation,
resizes it with `F.adaptive_avg_pool2d` and adds it with weight `scale * 0.2`, where
`scale` is the ControlNeXt module's `scale` (1.0; our callers pass the user's
`controlnext_cond_scale` here, zero for the unconditional half of a CFG batch).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# The release's fixed control strength ("increasing this value will strengthen the control level").
CONTROL_WEIGHT = 0.2
# Added to the control's std before dividing, as the original does.
STD_EPS = 1e-5


@functools.lru_cache(maxsize=64)
def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging matrix of torch's adaptive average pooling along one axis:
    output i averages inputs floor(i*in/out) .. ceil((i+1)*in/out) - 1."""
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool2d(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.functional.adaptive_avg_pool2d on channels-last `(n, h, w, c)`, any sizes
    (bins may overlap or, when enlarging, repeat inputs); static shapes, jit-able."""
    _, h, w, _ = x.shape
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    ph = jnp.asarray(adaptive_pool_matrix(h, oh), jnp.float32)
    pw = jnp.asarray(adaptive_pool_matrix(w, ow), jnp.float32)
    hi = jax.lax.Precision.HIGHEST  # keep the averages float32-exact on TF32 hardware
    xf = x.astype(jnp.float32)
    # (n, h, w, c) -> (n, oh, w, c) -> (n, oh, ow, c)
    y = jnp.einsum("oh,nhwc->nowc", ph, xf, precision=hi)
    y = jnp.einsum("pw,nowc->nopc", pw, y, precision=hi)
    return y.astype(x.dtype)


def frame_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample mean and *unbiased* std (torch.std default) over (h, w, c), float32, shapes (n, 1, 1, 1)."""
    xf = x.astype(jnp.float32)
    count = xf.shape[1] * xf.shape[2] * xf.shape[3]
    mean = jnp.mean(xf, axis=(1, 2, 3), keepdims=True)
    var = jnp.sum(jnp.square(xf - mean), axis=(1, 2, 3), keepdims=True) / (count - 1)
    return mean, jnp.sqrt(var)


def inject_control(x: jax.Array, control: jax.Array, scale: jax.Array | float = 1.0) -> jax.Array:
    """x + resize(renorm(control)) * scale * 0.2.

    x: `(n, h, w, c)` UNet activation (n = batch*frames); control: `(n, hc, wc, c)`;
    scale: scalar or `(n,)`. Returns x's shape and dtype.
    """
    if control.shape[0] != x.shape[0] or control.shape[-1] != x.shape[-1]:
        raise ValueError(f"inject_control: control {control.shape} does not fit activation {x.shape} "
                         "(needs the same batch*frames and channels)")
    # 1. renormalise each frame's control to the activation's mean/std
    mean_x, std_x = frame_stats(x)
    mean_c, std_c = frame_stats(control)
    c = (control.astype(jnp.float32) - mean_c) * (std_x / (std_c + STD_EPS)) + mean_x
    # 2. resize to the activation's spatial size, (n, hc, wc, c) -> (n, h, w, c)
    c = adaptive_avg_pool2d(c, x.shape[1:3])
    # 3. weighted addition
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (x.shape[0],)).reshape(-1, 1, 1, 1)
    return (x.astype(jnp.float32) + c * scale * CONTROL_WEIGHT).astype(x.dtype)
