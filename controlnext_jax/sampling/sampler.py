"""The Euler sampler over overlapping frame windows, as one `lax` loop nest (docs/sampling.md).

k-diffusion style: the sampler only knows a denoiser `denoise(x, sigma, c_noise, inputs) ->
denoised` and a sigma schedule. Per step, every window reads the latents as they were at
the start of the step, takes one Euler step, and the stepped windows are fused by a
weighted scatter-add (weights from `window_plan`). Steps are a `lax.fori_loop`; window
groups (several windows stacked into one model call) are an inner `lax.fori_loop`, so
the program size does not grow with the number of steps or windows.
All state (latents, accumulator) is float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from controlnext_jax.sampling.scheduler import euler_from_denoised

# denoise(x_windows (W, B, h, w, c) f32, sigma, c_noise, group inputs) -> denoised (W, B, h, w, c) f32
Denoiser = Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]


def sample_windows(denoise: Denoiser, latents: jax.Array, sigmas: jax.Array, c_noise: jax.Array,
                   plan: dict[str, jax.Array], group_inputs: Any = None,
                   on_window_group: Callable[[Any, Any], None] | None = None) -> jax.Array:
    """Run all steps. latents (F, h, w, c) float32, already scaled by the initial sigma;
    sigmas (steps + 1,), c_noise (steps,): the model's noise level per step;
    plan: `WindowPlan.arrays()` (frame_index, weight: (G, W, B); total: (F,));
    group_inputs: a pytree whose leaves have leading dims (G, W, ...), sliced per group
    and passed to `denoise`; on_window_group(step, group): a host function called (through
    `jax.debug.callback`, unordered: nothing flows back into the computation) when a group
    is done, for progress. Returns the final latents (F, h, w, c) float32."""
    frame_index, weight, total = plan["frame_index"], plan["weight"], plan["total"]
    num_groups = frame_index.shape[0]
    latents = latents.astype(jnp.float32)

    def step(i, x):
        sigma, sigma_next, noise_level = sigmas[i], sigmas[i + 1], c_noise[i]

        def window_group(g, acc):
            index = frame_index[g]  # (W, B)
            x_windows = x[index]  # every window reads the step's starting latents: (W, B, h, w, c)
            inputs = jax.tree.map(lambda a: a[g], group_inputs)
            denoised = denoise(x_windows, sigma, noise_level, inputs)
            stepped = euler_from_denoised(x_windows, denoised.astype(jnp.float32), sigma, sigma_next)
            acc = acc.at[index].add(stepped * weight[g][:, :, None, None, None])
            if on_window_group is not None:
                jax.debug.callback(on_window_group, i, g)
            return acc

        acc = jax.lax.fori_loop(0, num_groups, window_group, jnp.zeros_like(x))
        return acc / total[:, None, None, None]

    return jax.lax.fori_loop(0, c_noise.shape[0], step, latents)
