"""FID with a user-provided TorchScript feature extractor (the inception-2015-12-05.pt call)."""

import numpy as np
import pytest
import torch

from controlnext_jax.errors import UserError
from controlnext_jax.metrics.fid import FrameFeatures
from controlnext_jax.metrics.frechet import frechet_distance_from_features


class _Detector(torch.nn.Module):
    """Same call as StyleGAN's Inception detector: uint8 NCHW in, (n, d) features out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 8)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, (4, 4))
        feats = self.proj(pooled.flatten(1))
        return feats if return_features else feats.softmax(-1)


@pytest.fixture()
def extractor(tmp_path):
    path = tmp_path / "detector.pt"
    torch.jit.script(_Detector()).save(str(path))
    return path


def test_features_match_the_module_and_batching(extractor):
    frames = np.random.default_rng(0).integers(0, 256, (7, 20, 24, 3), dtype=np.uint8)
    ours = FrameFeatures(extractor, batch_size=3)(frames)
    module = torch.jit.load(str(extractor))
    ref = module(torch.from_numpy(frames).permute(0, 3, 1, 2), return_features=True).detach().double().numpy()
    assert ours.shape == (7, 8) and ours.dtype == np.float64
    # each feature is a float32 sum of 48 products, rounded differently in a batch of 3 (ours) and of 7
    # (the reference): the error scales with the largest terms, not with the element, so a small
    # feature can be off by much more than 1e-6 of itself; 1e-5 of the largest |feature| covers that
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    shifted = np.clip(frames.astype(int) + 60, 0, 255).astype(np.uint8)
    assert frechet_distance_from_features(ours, FrameFeatures(extractor)(shifted)) > 0.01
    assert abs(frechet_distance_from_features(ours, ours)) < 1e-9


def test_bad_extractor_files(tmp_path):
    with pytest.raises(UserError, match="fid_extractor: file .*missing.pt does not exist"):
        FrameFeatures(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a TorchScript module"):
        FrameFeatures(bad)
