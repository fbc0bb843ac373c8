"""Every parameter's PartitionSpec under the default rules, and the mesh / rules config checks.

The full-size SVD-XT UNet is built abstractly (shapes and annotations, no weights) and its
specs are computed for an abstract 8-way FSDP mesh: no devices are needed for specs.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import yaml
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec

from controlnext_jax.errors import UserError
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.sharding.logical_axes import LOGICAL_AXES, NORM
from controlnext_jax.sharding.mesh import mesh_from_config, mesh_shape, rules_from_config
from controlnext_jax.sharding.rules import DEFAULT_RULES, fallbacks, param_partition_specs, spec_for
from controlnext_jax.testing.torch_checkpoints import MODEL_CONFIG_DIR, model_config

FSDP8 = AbstractMesh((1, 8, 1), ("data", "fsdp", "tensor"))
MESH_CONFIG_DIR = MODEL_CONFIG_DIR.parent / "mesh"


def specs_of(component: str, size: str, mesh, rules=DEFAULT_RULES):
    """[(dotted path, shape, logical axes, PartitionSpec)] of every variable of an abstract model."""
    state = nnx.state(COMPONENTS[component].build_abstract(model_config(component, size)))
    specs = dict(nnx.to_flat_state(param_partition_specs(state, rules, mesh)))
    rows = []
    for path, var in nnx.to_flat_state(state):
        axes = var.get_metadata("out_sharding") if var.has_metadata("out_sharding") else None
        rows.append((".".join(map(str, path)), tuple(var.get_value().shape), axes, specs[path].get_value()))
    return state, rows


def check_specs(rows, mesh, big_bytes: int):
    sizes = dict(mesh.shape)
    for name, shape, axes, spec in rows:
        assert isinstance(spec, PartitionSpec), name
        assert axes is not None and len(axes) == len(shape), f"{name}: not annotated"
        for dim, entry in zip(shape, tuple(spec)):
            mesh_axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
            assert dim % math.prod(sizes[a] for a in mesh_axes) == 0, f"{name}: {shape} by {spec}"
        if NORM in axes:
            assert spec == PartitionSpec(), name
        if 4 * math.prod(shape) > big_bytes:  # float32
            assert "fsdp" in str(spec), f"{name}: {shape} ({4 * math.prod(shape) / 2**20:.1f} MB) replicated"


def test_full_size_unet_specs_under_default_rules():
    state, rows = specs_of("unet", "svd_xt", FSDP8)
    for name, shape, axes, spec in rows:
        print(f"{name:90s} {str(shape):22s} {str(axes):40s} {spec}")
    assert len(rows) > 1000
    check_specs(rows, FSDP8, big_bytes=1 << 20)
    total = sum(math.prod(s) for _, s, _, _ in rows)
    replicated = sum(math.prod(s) for _, s, _, spec in rows if spec == PartitionSpec())
    print(f"{len(rows)} parameters, {total / 1e9:.3f}e9 values, replicated: {replicated / total:.2e}")
    assert replicated / total < 1e-3  # norms, biases, mix factors
    # the only divisibility fallback: conv_out's 4 output channels (and its bias) on 8 devices
    assert [name for name, _, _ in fallbacks(state, DEFAULT_RULES, FSDP8)] == ["conv_out.bias", "conv_out.kernel"]
    by_name = {name: spec for name, _, _, spec in rows}
    # role-specific annotations at the call sites (attention, feed-forward down projection)
    attn = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert by_name[f"{attn}.to_k.kernel"] == PartitionSpec("fsdp")  # (embed=1024, heads=320)
    assert by_name["down_blocks.0.resnets.0.spatial_res_block.conv1.kernel"] == PartitionSpec(None, None, None, "fsdp")


def test_tensor_parallel_rules_split_heads_and_mlp():
    mesh = AbstractMesh((1, 2, 4), ("data", "fsdp", "tensor"))
    _, rows = specs_of("unet", "svd_xt", mesh)
    by_name = {name: spec for name, _, _, spec in rows}
    axes = {name: a for name, _, a, _ in rows}
    block = "down_blocks.1.attentions.0.transformer_blocks.0"
    # the call sites' roles (the default rules send heads and mlp both to tensor, so check the names)
    assert axes[f"{block}.attn1.to_q.kernel"] == axes[f"{block}.attn2.to_v.kernel"] == ("embed", "heads")
    assert axes[f"{block}.attn1.to_out.0.kernel"] == ("heads", "embed")
    assert axes[f"{block}.ff.net.0.proj.kernel"] == ("embed", "mlp")
    assert axes[f"{block}.ff.net.2.kernel"] == ("mlp", "embed")
    assert by_name[f"{block}.attn1.to_q.kernel"] == PartitionSpec("fsdp", "tensor")
    assert by_name[f"{block}.attn1.to_out.0.kernel"] == PartitionSpec("tensor", "fsdp")
    assert by_name[f"{block}.ff.net.2.kernel"] == PartitionSpec("tensor", "fsdp")


@pytest.mark.parametrize("component", ["unet", "controlnext", "vae", "image_encoder"])
def test_tiny_models_have_a_spec_for_every_parameter(component):
    mesh = AbstractMesh((2, 2, 1), ("data", "fsdp", "tensor"))
    _, rows = specs_of(component, "tiny", mesh)
    check_specs(rows, mesh, big_bytes=16 << 10)


def test_a_mesh_axis_splits_one_dimension_and_indivisible_ones_stay_whole():
    sizes = {"data": 1, "fsdp": 4, "tensor": 2}
    rules = {**DEFAULT_RULES, "mlp": ("fsdp", "tensor")}
    assert spec_for(("embed", "mlp"), (64, 64), rules, sizes) == PartitionSpec("fsdp", "tensor")
    assert spec_for(("mlp", "embed"), (64, 64), rules, sizes) == PartitionSpec(("fsdp", "tensor"))
    assert spec_for((None, None, "conv_in", "conv_out"), (3, 3, 8, 6), rules, sizes) == PartitionSpec()
    assert spec_for(("norm",), (64,), rules, sizes) == PartitionSpec()


def composed_mesh(name: str) -> dict:
    """The `mesh` group as Hydra composes it for a command with `defaults: - mesh: <name>`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(MESH_CONFIG_DIR.parent), version_base=None):
        return OmegaConf.to_container(compose(overrides=[f"+mesh={name}"]).mesh)


def test_config_files_give_the_default_rules():
    for name, shape in (("default", {"data": -1, "fsdp": 1, "tensor": 1}),
                        ("fsdp", {"data": 1, "fsdp": -1, "tensor": 1})):
        cfg = composed_mesh(name)
        assert rules_from_config(cfg) == DEFAULT_RULES
        assert cfg["shape"] == shape and cfg["distributed"] is False


def test_rules_config_errors_name_the_key():
    cfg = yaml.safe_load((MESH_CONFIG_DIR / "default.yaml").read_text())
    with pytest.raises(UserError, match="mesh.rules: unknown logical axis 'embedding'"):
        rules_from_config({**cfg, "rules": {**cfg["rules"], "embedding": "fsdp"}})
    with pytest.raises(UserError, match=r"mesh.rules.embed: 'model' is not a mesh axis"):
        rules_from_config({**cfg, "rules": {**cfg["rules"], "embed": "model"}})
    rules = dict(cfg["rules"])
    del rules["heads"]
    with pytest.raises(UserError, match="no rule for logical axis 'heads'"):
        rules_from_config({**cfg, "rules": rules})
    assert set(DEFAULT_RULES) == set(LOGICAL_AXES)


def test_mesh_shape_must_match_the_device_count():
    assert mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    with pytest.raises(UserError, match=r"mesh.shape=.*6 devices, but there are 8"):
        mesh_shape({"data": 3, "fsdp": 2, "tensor": 1}, 8)
    with pytest.raises(UserError, match=r"mesh.shape=.*do not divide the device count 8"):
        mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
    with pytest.raises(UserError, match="at most one axis"):
        mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(UserError, match="mesh.shape.fsdp=0"):
        mesh_shape({"data": 1, "fsdp": 0, "tensor": 1}, 8)
    with pytest.raises(UserError, match="expected exactly"):
        mesh_shape({"data": 1, "fsdp": 1}, 1)
    devices = jax.devices()
    with pytest.raises(UserError, match=f"but there are {len(devices)}"):
        mesh_from_config({"shape": {"data": len(devices) + 1, "fsdp": 1, "tensor": 1}})
    mesh = mesh_from_config(yaml.safe_load((MESH_CONFIG_DIR / "default.yaml").read_text()))
    assert dict(mesh.shape) == {"data": len(devices), "fsdp": 1, "tensor": 1}
    assert np.asarray(mesh.devices).size == len(devices)
