"""Helpers shared by the PyTorch-parity tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flax import nnx

from controlnext_jax.checkpoint.torch_layout import assign_state_dict, param_table
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.testing.parity_cases import rel_err  # noqa: F401  (re-exported for the tests)
from controlnext_jax.testing.parity_cases import to_nhwc as nchw_to_nhwc  # noqa: F401
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_random import randomize_  # noqa: F401  (re-exported for the tests)

TOL = 1e-4  # ||out - ref|| / ||ref|| in float32


def copy_torch_weights(model, torch_module: torch.nn.Module, **kw) -> None:
    """Load a torch module's state dict (parameters only) into an NNX model."""
    names = {n for n, _ in torch_module.named_parameters()}
    sd = {k: v.detach().float().numpy() for k, v in torch_module.state_dict().items() if k in names}
    assign_state_dict(model, sd, source=type(torch_module).__name__, **kw)


def nhwc_to_nchw(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a, np.float32), -1, -3)))


def mapped_torch_shapes(abstract) -> dict[str, tuple[int, ...]]:
    """torch key -> torch-layout shape of every parameter of an (abstract) NNX model."""
    return {key: slot.torch_shape for key, slot in param_table(abstract).items()}


def torch_param_shapes(torch_module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(p.shape) for key, p in torch_module.named_parameters()}


def full_size_pair(component: str, build_torch: Callable[[dict], torch.nn.Module]
                   ) -> tuple[torch.nn.Module, nnx.Module]:
    """The svd_xt-size `component` without weights: the torch module built by `build_torch` from
    the config of configs/model/svd_xt.yaml (file metadata `_*` left out) on the meta device, and
    ours built abstractly from the same config."""
    d = model_configs("svd_xt")[component]
    abstract = COMPONENTS[component].build_abstract(COMPONENTS[component].config_from_dict(d))
    with torch.device("meta"):
        torch_module = build_torch({k: v for k, v in d.items() if not k.startswith("_")})
    return torch_module, abstract
