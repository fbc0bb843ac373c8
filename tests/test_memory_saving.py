"""memory_saving=True: the same video as the normal mode, from smaller programs (docs/sampling.md, Memory saving).

A tiny random-weight release at 64x64 (8x8 latents), 10 frames in windows of 6 overlapping
by 2, 2 steps, CFG. `attention_chunked.MAX_LOGITS` is lowered so the tiny model's
attention really runs in pieces (both the batch-group and the query-piece paths).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controlnext_jax.models import attention_chunked
from controlnext_jax.pipeline import load_pipeline
from controlnext_jax.testing.parity_cases import rel_err
from controlnext_jax.testing.torch_checkpoints import model_configs
from controlnext_jax.testing.torch_sampler import build_random_release

SIZE, FRAMES, STEPS = 64, 10, 2
# Below the tiny model's largest attention (2 heads x 64 x 64 = 8192 logits per frame, 72 per
# temporal position), above its smallest: spatial attention goes query piece by query piece
# (3 pieces of 22 rows, the last padded), temporal attention in padded groups of positions.
SMALL_MAX_LOGITS = 3000
# ||memory_saving - normal|| / ||normal|| of the final float32 latents. The two modes compute
# the same maths on differently shaped operands (UNet batch 6 frames instead of 12 with the
# CFG halves apart, attention in pieces), so XLA's kernels sum in different orders: float32
# rounding, measured 2.0e-6 after 2 steps. A wrong half (swapped, or the control not zeroed
# for the unconditional one) or a dropped piece gives errors above 1e-2.
TOL = 1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_random_release(tmp_path_factory.mktemp("tiny_release"), model_configs("tiny"), seed=0)[1]


@pytest.fixture(scope="module")
def small_pieces():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention_chunked, "MAX_LOGITS", SMALL_MAX_LOGITS)
        yield


def _inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    return dict(image=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                poses=rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
                latents=rng.standard_normal((1, FRAMES, SIZE // 8, SIZE // 8, 4), dtype=np.float32),
                image_noise=rng.standard_normal((1, SIZE, SIZE, 3), dtype=np.float32))


CALL = dict(height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=2.5, batch_frames=6, overlap=2,
            output_type="latent", controlnext_cond_scale=1.3)


def test_chunked_attention_equals_plain(small_pieces):
    rng = np.random.default_rng(0)
    for n, t, s, heads in [(5, 40, 40, 2), (300, 6, 6, 2), (3, 7, 1, 4), (2, 30, 12, 2)]:
        q, k, v = (jnp.asarray(rng.standard_normal((n, length, heads, 8), dtype=np.float32))
                   for length in (t, s, s))
        # float32 reassociation only: the same dot products and softmax per query row
        np.testing.assert_allclose(attention_chunked.chunked_dot_product_attention(q, k, v),
                                   jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two compilations of the tiny pipeline: ~50 s on an idle 2-core CPU
def test_memory_saving_equals_normal_mode(ckpt, small_pieces, tmp_path):
    normal = load_pipeline(ckpt, compilation_cache_dir=None)
    saving = load_pipeline(ckpt, "float32", memory_saving=True, compilation_cache_dir=None)
    inputs = _inputs()
    expected = normal(**inputs, **CALL)
    got = saving(**inputs, **CALL)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < TOL

    # the programs really differ: the memory-saving one needs less temporary memory
    # (one CFG half at a time), and holds chunked attention in its graph
    image, poses = inputs["image"], inputs["poses"]
    call = {k: v for k, v in CALL.items()}
    temp = {name: pipe.compile(image, poses, **call).memory_analysis().temp_size_in_bytes
            for name, pipe in (("normal", normal), ("saving", saving))}
    assert temp["saving"] < temp["normal"], temp
    assert saving.compile_count == normal.compile_count == 1  # compile() reused the call's program


def test_memory_saving_defaults_to_bfloat16_weights(ckpt):
    saving = load_pipeline(ckpt, memory_saving=True, compilation_cache_dir=None)
    unet = jax.tree.leaves(saving._params["unet"])
    assert {x.dtype for x in unet if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.bfloat16)}
    assert load_pipeline(ckpt, compilation_cache_dir=None)._params["unet"] is not None
    with pytest.raises(ValueError, match="memory_saving"):
        load_pipeline(ckpt, memory_saving="yes", compilation_cache_dir=None)


def test_animate_cli_checks_memory_saving():
    from controlnext_jax.commands.animate import check_parameters
    from controlnext_jax.errors import UserError

    with pytest.raises(UserError, match="memory_saving='yes': allowed values are True, False"):
        check_parameters({"dtype": None, "memory_saving": "yes"})
    with pytest.raises(UserError, match="dtype='float16'"):
        check_parameters({"dtype": "float16", "memory_saving": True})
