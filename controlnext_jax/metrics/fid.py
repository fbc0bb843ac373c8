"""FID over frames, with a feature extractor the user provides.

This version has no Inception-v3 of its own. FID is computed with the TorchScript
detector used by StyleGAN2-ADA, StyleGAN3 and clean-fid, `inception-2015-12-05.pt` (the
TF Inception pool3 features, 2048-d): a TorchScript module called as
`detector(frames_uint8_nchw, return_features=True) -> (n, d)` that resizes its input
itself. Any TorchScript module with that call works. It runs on the CPU in PyTorch (the
optional `torch` extra); the statistics and the Frechet distance are `frechet.py`'s.

A TorchScript archive holds TorchScript code and tensors, not arbitrary Python: it is
loaded with `torch.jit.load`, never with `pickle`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from controlnext_jax.errors import UserError


class FrameFeatures:
    """Batched features of uint8 (n, h, w, 3) frames through a TorchScript detector."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        import torch  # optional dependency: only FID needs it

        path = Path(path)
        if not path.is_file():
            raise UserError(f"frames.fid_extractor: file {path} does not exist")
        if batch_size < 1:
            raise UserError(f"frames.fid_batch_size={batch_size}: must be >= 1")
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # not a TorchScript archive
            raise UserError(f"frames.fid_extractor: {path} is not a TorchScript module ({e})") from e
        self.path, self.batch_size, self._torch = path, batch_size, torch

    def __call__(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"FID frames must be uint8 (n, h, w, 3), got {frames.dtype} {frames.shape}")
        out = []
        with self._torch.no_grad():
            for i in range(0, len(frames), self.batch_size):
                batch = self._torch.from_numpy(np.ascontiguousarray(frames[i: i + self.batch_size]))
                feats = self.module(batch.permute(0, 3, 1, 2), return_features=True)
                out.append(np.asarray(feats.detach().double().numpy()).reshape(len(batch), -1))
        return np.concatenate(out) if out else np.zeros((0, 0))
