"""Helpers shared by the PyTorch-parity tests."""

from __future__ import annotations

import numpy as np
import torch

from controlnext_jax.checkpoint.torch_layout import assign_state_dict

TOL = 1e-4  # ||out - ref|| / ||ref|| in float32


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def copy_torch_weights(model, torch_module: torch.nn.Module, **kw) -> None:
    """Load a torch module's state dict (parameters only) into an NNX model."""
    names = {n for n, _ in torch_module.named_parameters()}
    sd = {k: v.detach().float().numpy() for k, v in torch_module.state_dict().items() if k in names}
    assign_state_dict(model, sd, source=type(torch_module).__name__, **kw)


def randomize_(torch_module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter fresh random values (norm scales around 1, mix factors spread out),
    so no parameter sits at an initialisation value that hides a bug (zero biases, unit scales)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in torch_module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if name.endswith("weight") and p.ndim == 1:
                p.copy_(1.0 + noise)
            else:
                fan_in = max(1, int(np.prod(p.shape[1:]))) if p.ndim > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in) if p.ndim > 1 else noise)
    return torch_module.eval()


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    """(n, c, h, w) -> (n, h, w, c) or (b, f, c, h, w) -> (b, f, h, w, c)."""
    a = x.detach().float().numpy()
    return np.moveaxis(a, -3, -1)


def nhwc_to_nchw(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a, np.float32), -1, -3)))
