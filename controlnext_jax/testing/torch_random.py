"""Random parameters for PyTorch reference modules."""

from __future__ import annotations

import numpy as np
import torch


def randomize_(torch_module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter fresh random values (norm scales around 1, everything else around 0
    with fan-in scaling), so no parameter sits at an initialisation value that hides a bug
    (zero biases, unit scales, zero-initialised output convolutions). Returns the module in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in torch_module.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * std)
            elif p.ndim > 1:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return torch_module.eval()
