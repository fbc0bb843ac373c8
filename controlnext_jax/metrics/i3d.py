"""Inflated 3D ConvNet (I3D, Inception-v1 inflated), Kinetics-400 classifier, as used by FVD.

The network of Carreira & Zisserman (DeepMind `kinetics-i3d/i3d.py`, the TF-Hub module
`deepmind/i3d-kinetics-400/1`) in Flax NNX, channels-last. Input: videos
`(batch, frames, 224, 224, 3)` in [-1, 1]; output: the 400 Kinetics logits averaged over
time, the embedding that FVD's canonical definition uses.

Attribute names mirror the common PyTorch port (piergiaj `pytorch-i3d`, whose layout the
widespread `i3d_pretrained_400.pt` uses): `Conv3d_1a_7x7.conv3d`, `.bn`,
`Mixed_3b.b0` / `b1a` / `b1b` / `b2a` / `b2b` / `b3b`, `logits.conv3d`; so a torch key
is the NNX path joined with dots (see `i3d_weights.py`).

Padding is TensorFlow "SAME" everywhere (the extra pixel of an odd padding goes after),
for convolutions and max pools alike, as the TF original and the PyTorch port compute it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

NUM_CLASSES = 400
INPUT_SIZE = 224
# Frames in -> time steps left before the final (2, 7, 7) average pool: three stride-2
# stages with SAME padding, ceil(ceil(ceil(t/2)/2)/2) >= 2 needs t >= 9.
MIN_FRAMES = 9

# (b0, b1a, b1b, b2a, b2b, b3b) output channels of each Inception block, in network order.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def max_pool_same(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
    """TF-style SAME max pool over (frames, height, width) of a (b, t, h, w, c) tensor."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


class Unit3D(nnx.Module):
    """Conv3d (no bias) -> BatchNorm (inference statistics) -> ReLU; the logits layer has a
    bias and neither norm nor activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), *, use_batch_norm: bool = True, use_bias: bool = False,
                 activation: bool = True, rngs: nnx.Rngs):
        self.conv3d = nnx.Conv(in_channels, out_channels, tuple(kernel), strides=tuple(stride), padding="SAME",
                               use_bias=use_bias, rngs=rngs)
        # Sonnet's BatchNorm of the original: epsilon 1e-3, no learnt scale (ours keeps one,
        # set to 1 when loading the TF weights, so the PyTorch port's gamma loads too).
        self.bn = (nnx.BatchNorm(out_channels, use_running_average=True, epsilon=1e-3, momentum=0.999, rngs=rngs)
                   if use_batch_norm else None)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return jax.nn.relu(x) if self.activation else x


class InceptionBlock(nnx.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3;
    3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, channels: Sequence[int], *, rngs: nnx.Rngs):
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(in_channels, c0, rngs=rngs)
        self.b1a = Unit3D(in_channels, c1a, rngs=rngs)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3), rngs=rngs)
        self.b2a = Unit3D(in_channels, c2a, rngs=rngs)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3), rngs=rngs)
        self.b3b = Unit3D(in_channels, c3b, rngs=rngs)
        self.out_channels = c0 + c1b + c2b + c3b

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3 = self.b3b(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), branch3], axis=-1)


class InceptionI3d(nnx.Module):
    """I3D up to the time-averaged logits (the FVD embedding)."""

    def __init__(self, num_classes: int = NUM_CLASSES, *, rngs: nnx.Rngs):
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, rngs=rngs)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
        channels = 192
        for name, block_channels in INCEPTION_CHANNELS.items():
            block = InceptionBlock(channels, block_channels, rngs=rngs)
            setattr(self, name, block)
            channels = block.out_channels
        self.logits = Unit3D(channels, num_classes, use_batch_norm=False, use_bias=True, activation=False, rngs=rngs)

    def __call__(self, video: jax.Array) -> jax.Array:
        """(b, t, 224, 224, 3) in [-1, 1] -> (b, num_classes) logits averaged over time."""
        if video.shape[2:] != (INPUT_SIZE, INPUT_SIZE, 3) or video.shape[1] < MIN_FRAMES:
            raise ValueError(f"InceptionI3d: input must be (batch, frames>={MIN_FRAMES}, {INPUT_SIZE}, "
                             f"{INPUT_SIZE}, 3), got {video.shape}")
        # 1. stem: (b, t, 224, 224, 3) -> (b, t/2, 56, 56, 192)
        x = self.Conv3d_1a_7x7(video)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        # 2. Inception stages 3, 4, 5 with pools between: -> (b, t/8, 7, 7, 1024)
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))
        # 3. logits: VALID (2, 7, 7) average pool, 1x1x1 conv -> (b, t', 1, 1, classes)
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID") / (2 * 7 * 7)
        logits = self.logits(x)
        # 4. drop the 1x1 spatial axes and average over time: -> (b, classes)
        return jnp.mean(logits[:, :, 0, 0, :], axis=1)
