"""LPIPS (Zhang et al. 2018, the `lpips` package v0.1) in Flax NNX, channels-last.

d(x0, x1) = sum over layers l of mean_hw( w_l . (n(f_l(x0)) - n(f_l(x1)))^2 ), where f_l are
the ReLU outputs of an ImageNet backbone after the package's scaling layer, n normalises
each position to unit length over channels (eps 1e-10) and w_l are the learnt 1x1 linear
heads. Inputs are frames in [-1, 1].

Weights come from two user files, both PyTorch state dicts read with
`torch.load(weights_only=True)`: the torchvision backbone (`alexnet-owt-7be5be79.pth`
or `vgg16-397923af.pth`: `features.<i>.weight/bias`) and the package's linear heads
(`lpips/weights/v0.1/alex.pth` or `vgg.pth`: `lin<l>.model.1.weight`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.checkpoint.torch_files import StateDictFile
from controlnext_jax.errors import UserError

SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# Backbone as torchvision builds `features`: ("conv", index, in, out, kernel, stride, pad) /
# ("pool",) / ("tap",) where a tap is the ReLU output LPIPS compares (ReLU follows each conv).
ALEX = [("conv", 0, 3, 64, 11, 4, 2), ("tap",), ("pool",), ("conv", 3, 64, 192, 5, 1, 2), ("tap",), ("pool",),
        ("conv", 6, 192, 384, 3, 1, 1), ("tap",), ("conv", 8, 384, 256, 3, 1, 1), ("tap",),
        ("conv", 10, 256, 256, 3, 1, 1), ("tap",)]
VGG16 = [("conv", 0, 3, 64, 3, 1, 1), ("conv", 2, 64, 64, 3, 1, 1), ("tap",), ("pool",),
         ("conv", 5, 64, 128, 3, 1, 1), ("conv", 7, 128, 128, 3, 1, 1), ("tap",), ("pool",),
         ("conv", 10, 128, 256, 3, 1, 1), ("conv", 12, 256, 256, 3, 1, 1), ("conv", 14, 256, 256, 3, 1, 1),
         ("tap",), ("pool",),
         ("conv", 17, 256, 512, 3, 1, 1), ("conv", 19, 512, 512, 3, 1, 1), ("conv", 21, 512, 512, 3, 1, 1),
         ("tap",), ("pool",),
         ("conv", 24, 512, 512, 3, 1, 1), ("conv", 26, 512, 512, 3, 1, 1), ("conv", 28, 512, 512, 3, 1, 1),
         ("tap",)]
NETS = {"alex": (ALEX, 3), "vgg": (VGG16, 2)}  # layout, max-pool kernel (stride 2 for both)


class LPIPS(nnx.Module):
    def __init__(self, net: str = "alex", *, rngs: nnx.Rngs):
        if net not in NETS:
            raise UserError(f"frames.lpips_net={net!r}: must be one of {sorted(NETS)}")
        layout, self.pool = NETS[net]
        self.layout = [step for step in layout]
        self.features = nnx.Dict({str(s[1]): nnx.Conv(s[2], s[3], (s[4], s[4]), strides=s[5],
                                                      padding=[(s[6], s[6])] * 2, rngs=rngs)
                                  for s in layout if s[0] == "conv"})
        taps = [layout[i - 1][3] for i, s in enumerate(layout) if s[0] == "tap"]
        self.lin = nnx.List([nnx.Conv(c, 1, (1, 1), use_bias=False, rngs=rngs) for c in taps])

    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        """(n, h, w, 3) each in [-1, 1] -> (n,) distances."""
        # 1. both images through the backbone in one batch: (2n, h, w, 3)
        x = (jnp.concatenate([x0, x1]) - SHIFT) / SCALE
        total = 0.0
        tap = 0
        for step in self.layout:
            if step[0] == "conv":
                x = jax.nn.relu(self.features[str(step[1])](x))
            elif step[0] == "pool":
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, self.pool, self.pool, 1), (1, 2, 2, 1),
                                          "VALID")
            else:
                # 2. unit-normalise over channels, squared difference, linear head, spatial mean
                f = x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10)
                f0, f1 = jnp.split(f, 2)
                total = total + jnp.mean(self.lin[tap]((f0 - f1) ** 2), axis=(1, 2, 3))
                tap += 1
        return total


def _torch_state_dict(path: str | Path, what: str) -> StateDictFile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: file {path} does not exist")
    return StateDictFile(path)  # torch.load(weights_only=True), or safetensors


def load_lpips(net: str, backbone: str | Path, linear: str | Path) -> LPIPS:
    """LPIPS with the torchvision backbone and the lpips package's linear heads."""
    model = nnx.eval_shape(lambda: LPIPS(net, rngs=nnx.Rngs(0)))
    bb = _torch_state_dict(backbone, "frames.lpips_backbone")
    lin = _torch_state_dict(linear, "frames.lpips_linear")
    def assign(var, array: np.ndarray, where: str, key: str) -> None:
        target = var.get_value().shape
        # torch (out, in, h, w) -> ours (h, w, in, out); biases as they are
        expected = (target[3], target[2], target[0], target[1]) if len(target) == 4 else target
        if array.shape != expected:
            raise UserError(f"{where}: {key} has shape {array.shape}, expected {expected}")
        array = np.asarray(array, np.float32)
        var.set_value(jnp.asarray(np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array))

    for key, conv in model.features.items():
        for leaf, name in (("kernel", "weight"), ("bias", "bias")):
            tkey = f"features.{key}.{name}"
            if tkey not in bb:
                raise UserError(f"frames.lpips_backbone: {backbone} lacks {tkey} (not a torchvision {net} state dict)")
            assign(getattr(conv, leaf), bb[tkey], "frames.lpips_backbone", tkey)
    for i, conv in enumerate(model.lin):
        tkey = f"lin{i}.model.1.weight"
        if tkey not in lin:
            raise UserError(f"frames.lpips_linear: {linear} lacks {tkey} (not an lpips v0.1 {net} file)")
        assign(conv.kernel, lin[tkey], "frames.lpips_linear", tkey)
    return model


class LPIPSMetric:
    """Jitted per-frame LPIPS of uint8 frame pairs, in batches of `batch_size`."""

    def __init__(self, model: LPIPS, batch_size: int = 8):
        if batch_size < 1:
            raise UserError(f"frames.lpips_batch_size={batch_size}: must be >= 1")
        graphdef, self._state = nnx.split(model)
        self.batch_size = batch_size

        def distance(state, a, b):
            to_unit = lambda v: v.astype(jnp.float32) / 127.5 - 1.0  # noqa: E731
            return nnx.merge(graphdef, state)(to_unit(a), to_unit(b))

        self._distance = jax.jit(distance)

    def __call__(self, generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
        if generated.shape != reference.shape or generated.ndim != 4:
            raise ValueError(f"LPIPS frames must be two (t, h, w, 3) arrays of one shape, got {generated.shape} "
                             f"and {reference.shape}")
        out = []
        for i in range(0, len(generated), self.batch_size):
            a, b = generated[i: i + self.batch_size], reference[i: i + self.batch_size]
            n = len(a)
            if n < self.batch_size:  # pad: one compiled shape per frame size
                pad = [(0, self.batch_size - n)] + [(0, 0)] * 3
                a, b = np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge")
            out.append(np.asarray(self._distance(self._state, a, b), np.float64)[:n])
        return np.concatenate(out) if out else np.zeros(0)
