"""What `memory_saving=True` changes in the networks a pipeline holds (docs/sampling.md, Memory saving).

The pipeline's part (the CFG halves as two UNet calls, one window per call) lives in
`program.py` and `pipeline.py`; here the per-module settings, applied once to the graph
definitions: UNet and VAE attention in bounded pieces (`attention_chunked.py`) unless an
implementation was chosen (e.g. "cudnn", which bounds memory itself), and the UNet
blocks' rematerialisation policy (`unet_blocks.set_remat`).
"""

from __future__ import annotations

from flax import nnx

from controlnext_jax.models.attention import Attention
from controlnext_jax.models.unet_blocks import set_remat

# Rematerialisation only changes what a backward pass stores: in a forward-only program
# `jax.checkpoint` has no residuals to drop, and XLA's buffer assignment already frees each
# block's temporaries when the block ends. Measured with benchmarks/predict_memory.py
# (BENCHMARKS.md, Animate memory): "both" gives the same predicted peak as "none" at the
# endpoint size, so it does not pay in inference and stays off.
REMAT_POLICY = "none"


def memory_saving_graphdefs(graphdefs: dict, params: dict, *, remat: str | None = None) -> dict:
    """Copies of the UNet's and VAE's graph definitions with chunked attention and `remat` set
    (default REMAT_POLICY; the parameter states are unchanged, so the same `params` go with them)."""
    remat = REMAT_POLICY if remat is None else remat
    out = dict(graphdefs)
    for name in ("unet", "vae"):
        module = nnx.merge(graphdefs[name], params[name])
        for _, layer in module.iter_modules():
            if isinstance(layer, Attention) and layer.implementation is None:
                layer.implementation = "chunked"
        if name == "unet":
            set_remat(module, remat)
        out[name] = nnx.split(module)[0]
    return out
