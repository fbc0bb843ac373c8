"""added_time_ids against diffusers' StableVideoDiffusionPipeline (the fps - 1 pitfall)."""

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableVideoDiffusionPipeline

from controlnext_jax.sampling.conditioning import added_time_ids


def diffusers_added_time_ids(fps, motion_bucket_id, noise_aug_strength, batch):
    # the pipeline's __call__ reduces fps by one, then builds the ids
    source = inspect.getsource(StableVideoDiffusionPipeline.__call__)
    assert "fps = fps - 1" in source
    linear = SimpleNamespace(in_features=3 * 256)
    fake = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(addition_time_embed_dim=256),
                                                add_embedding=SimpleNamespace(linear_1=linear)))
    return StableVideoDiffusionPipeline._get_add_time_ids(fake, fps - 1, motion_bucket_id, noise_aug_strength,
                                                          torch.float32, batch, 1, False).numpy()


@pytest.mark.parametrize("fps,motion,noise,batch", [(7, 127, 0.02, 1), (30, 40.5, 0.1, 3)])
def test_added_time_ids_match_diffusers(fps, motion, noise, batch):
    ours = added_time_ids(fps, motion, noise, batch=batch)
    np.testing.assert_array_equal(ours, diffusers_added_time_ids(fps, motion, noise, batch))
    assert ours[0, 0] == fps - 1


def test_original_quirk_and_ranges():
    np.testing.assert_array_equal(added_time_ids(12, 3, 0.5, batch=2, reproduce_original=True),
                                  np.float32([[6, 128, 0.02]] * 2))
    with pytest.raises(ValueError, match=r"fps=0: allowed range is 1..60"):
        added_time_ids(0, 127, 0.02)
    with pytest.raises(ValueError, match=r"motion_bucket_id=300: allowed range is 0..255"):
        added_time_ids(7, 300, 0.02)
