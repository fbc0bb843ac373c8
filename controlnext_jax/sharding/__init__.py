"""Training-time sharding by logical axis names (docs/scaling.md).

`logical_axes` names what each parameter dimension is (the models annotate with it),
`rules` maps those names to mesh axes under a config and gives every parameter its
PartitionSpec, `mesh` builds the device mesh and the rules from the `mesh` config group.
Inference keeps its own 1-D window mesh (controlnext_jax/pipeline/sharding.py).
"""
