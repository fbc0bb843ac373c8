"""The logical axis names that parameters and inputs are annotated with, and the mesh axes (docs/scaling.md).

A model says what each dimension of a parameter *is* (a logical axis); the config alone
says how that is laid out on devices (rules: logical axis -> mesh axes, `sharding.rules`).
So the models never name a mesh axis, and changing the parallelism is a config change.

Logical axes (a dimension annotated `None` is never sharded: spatial kernel taps, scalars):

- BATCH     the leading dimension of every batch input (videos of a step).
- EMBED     the model width a linear layer reads from or writes back to (a transformer's
            hidden size, a resnet's channels as seen by its time projection).
- MLP       the widened side of a linear layer: a feed-forward's inner width, an embedding MLP's
            hidden width; the default output axis of `layers.Linear`.
- HEADS     attention's inner width (heads x head dim): output of q/k/v, input of the out projection.
- CONV_IN   the input channels of a convolution kernel.
- CONV_OUT  the output channels of a convolution kernel (and its bias).
- NORM      the channels of a norm's scale and bias: small, replicated by default.
- VOCAB     the rows of an embedding table (CLIP's position embeddings).

Mesh axes (their sizes come from `mesh.shape`):

- DATA      pure data parallelism: parameters replicated, batch split.
- FSDP      data parallelism whose parameters, gradients and optimizer moments are split
            too (ZeRO-3 style): each device keeps 1/fsdp of the state, XLA gathers a layer's
            weights when it runs.
- TENSOR    tensor (model) parallelism: attention heads and MLP widths split, activations too.
"""

from __future__ import annotations

BATCH = "batch"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
NORM = "norm"
VOCAB = "vocab"

LOGICAL_AXES = (BATCH, EMBED, MLP, HEADS, CONV_IN, CONV_OUT, NORM, VOCAB)

DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"

# outermost first: `tensor` innermost, so its devices are neighbours (the fastest links)
MESH_AXES = (DATA, FSDP, TENSOR)

# The flax variable metadata key holding a parameter's logical axes (flax's own name, so
# `nnx.get_partition_spec` shows them too).
METADATA_KEY = "out_sharding"


def axes_metadata(*axes: str | None) -> dict:
    """Variable metadata annotating a parameter with one logical axis (or None) per dimension.

    `eager_sharding=False`: flax would otherwise try to place the value on a mesh at creation,
    which needs a mesh context and mesh axis names; placement is `sharding.rules`' job.
    """
    return {METADATA_KEY: tuple(axes), "eager_sharding": False}
