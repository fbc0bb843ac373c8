"""Reading PyTorch weight files without executing code from them.

`.safetensors` are read tensor by tensor (numpy, lazily); `.bin`/`.pt` pickles only with
`torch.load(weights_only=True)` (memory-mapped), which refuses anything but tensors and
plain containers. A diffusers component folder is resolved to its weight file(s),
including fp16 variants and sharded `*.index.json` sets.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from controlnext_jax.errors import UserError


class CheckpointError(UserError):
    """A weight file or folder cannot be used; the message names the file (and key)."""


WEIGHT_NAMES = {
    # component folder -> file stems in order of preference (full precision first)
    "diffusers": ("diffusion_pytorch_model", "diffusion_pytorch_model.fp16"),
    "transformers": ("model", "model.fp16", "pytorch_model", "pytorch_model.fp16"),
}


def find_weight_file(folder: Path) -> Path:
    """The weight file of a diffusers/transformers component folder (prefers .safetensors, fp32)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: component folder not found")
    stems = WEIGHT_NAMES["diffusers"] + WEIGHT_NAMES["transformers"]
    for stem in stems:
        for ext in (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json"):
            path = folder / f"{stem}{ext}"
            if path.is_file():
                return path
    raise CheckpointError(f"{folder}: no weight file found (looked for {', '.join(s + '.safetensors' for s in stems)}"
                          f" and .bin / sharded .index.json variants)")


class StateDictFile(Mapping[str, np.ndarray]):
    """A read-only, lazily loaded torch state dict: key -> numpy array (torch layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: file not found")
        name = self.path.name
        if name.endswith(".index.json"):
            self._open_index()
        elif name.endswith(".safetensors"):
            self._open_safetensors(self.path)
        elif name.endswith((".bin", ".pt", ".pth", ".ckpt")):
            self._open_pickle(self.path)
        else:
            raise CheckpointError(f"{self.path}: unsupported weight file type (allowed: .safetensors, .bin, .pt, "
                                  f".pth, .ckpt, *.index.json)")

    # -- opening -------------------------------------------------------------------------------
    def _open_index(self) -> None:
        try:
            weight_map = json.loads(self.path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{self.path}: not a sharded-checkpoint index ({e})") from e
        self._loaders: dict[str, StateDictFile] = {}
        self._keys = {}
        for key, shard in weight_map.items():
            shard_path = self.path.parent / shard
            if shard_path not in self._loaders:
                self._loaders[shard_path] = StateDictFile(shard_path)
            self._keys[key] = self._loaders[shard_path]
        self._get = lambda key: self._keys[key][key]
        self._shape = lambda key: self._keys[key].shape(key)

    def _open_safetensors(self, path: Path) -> None:
        from safetensors import SafetensorError, safe_open

        try:
            handle = safe_open(str(path), framework="np")
            keys = list(handle.keys())
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt): {e}") from e
        self._keys = dict.fromkeys(keys)

        def get(key: str) -> np.ndarray:
            try:
                return handle.get_tensor(key)
            except Exception as e:  # noqa: BLE001 - re-raised with the file and key named
                raise CheckpointError(f"{path}: cannot read tensor {key!r}: {e}") from e

        self._get = get
        self._shape = lambda key: tuple(handle.get_slice(key).get_shape())

    def _open_pickle(self, path: Path) -> None:
        import torch

        try:
            # Memory-map the zip format (torch >= 1.6); the legacy tar/pickle format cannot be
            # mapped and is read whole, still with weights_only=True.
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            raise CheckpointError(f"{path}: cannot load as a torch state dict with weights_only=True "
                                  f"(truncated, corrupt, or holds non-tensor objects): {e}") from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: expected a flat dict of tensors (a state dict)")
        self._keys = dict.fromkeys(obj)

        def get(key: str) -> np.ndarray:
            t = obj[key].detach()
            if t.dtype == torch.bfloat16:
                import ml_dtypes

                return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            return t.numpy()

        self._get = get
        self._shape = lambda key: tuple(obj[key].shape)

    # -- Mapping -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        return self._get(key)

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, read from the file's metadata (no data loaded)."""
        return self._shape(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
