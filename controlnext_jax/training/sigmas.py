"""Noise levels for training: pure functions of a PRNG key (docs/release_semantics.md, Training).

The release draws sigma from the cosine-interpolated logSNR distribution of "simple
diffusion" (Hoogeboom et al.): for u ~ U(0, 1) the logSNR is a linear interpolation, by u,
of two shifted cosine schedules (noise resolutions 32 and 64 for a 64-wide image), and
sigma = sigma_data * exp(-logSNR / 2). Its sigma_data of 0.5 belongs to this sampler only;
the loss itself is SVD's preconditioning, which has no sigma_data. The log-normal
sampler is the alternative the release leaves commented out (loc 0.7, scale 1.6). The
Karras sampler is ours: it draws where animate's sampler evaluates the model (a uniform
position on its rho-7 ramp from 700 to 0.002), so half its draws lie above sigma 12, where
the release's sampler puts 5 % (docs/embedded_model.md, "Training where the sampler steps").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from controlnext_jax.sampling.scheduler import karras_ramp


@dataclass(frozen=True)
class CosineInterpolated:
    """The release's sampler and its constants."""

    image_d: float = 64.0
    noise_d_low: float = 32.0
    noise_d_high: float = 64.0
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    sigma_data: float = 0.5

    def sigma_of_u(self, u: jax.Array) -> jax.Array:
        """The sampler's inverse survival function: sigma falls monotonically from sigma_max
        at u = 0 to sigma_min at u = 1, so the q-quantile of sigma is sigma_of_u(1 - q)."""
        # logSNR at each end of the sigma range (the release calls the first logsnr_min)
        logsnr_at_sigma_min = -2.0 * math.log(self.sigma_min / self.sigma_data)
        logsnr_at_sigma_max = -2.0 * math.log(self.sigma_max / self.sigma_data)

        def shifted_cosine(noise_d: float) -> jax.Array:
            shift = 2.0 * math.log(noise_d / self.image_d)
            # the cosine schedule between the shifted bounds, then shifted back
            t_lo = math.atan(math.exp(-0.5 * (logsnr_at_sigma_max - shift)))
            t_hi = math.atan(math.exp(-0.5 * (logsnr_at_sigma_min - shift)))
            return -2.0 * jnp.log(jnp.tan(t_lo + u * (t_hi - t_lo))) + shift

        low, high = shifted_cosine(self.noise_d_low), shifted_cosine(self.noise_d_high)
        logsnr = low + u * (high - low)
        return jnp.exp(-logsnr / 2.0) * self.sigma_data

    def __call__(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return self.sigma_of_u(jax.random.uniform(key, shape, jnp.float32))


@dataclass(frozen=True)
class LogNormal:
    """sigma = exp(N(loc, scale)), the release's commented-out alternative (EDM-style)."""

    loc: float = 0.7
    scale: float = 1.6

    def __call__(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jnp.exp(self.loc + self.scale * jax.random.normal(key, shape, jnp.float32))


@dataclass(frozen=True)
class Karras:
    """sigma = (max^(1/rho) + t (min^(1/rho) - max^(1/rho)))^rho for t ~ U(0, 1): the continuous form of
    the Karras schedule animate samples with (sampling/scheduler.make_sigmas, the same `karras_ramp`),
    SVD's constants."""

    sigma_min: float = 0.002
    sigma_max: float = 700.0

    def sigma_of_t(self, t: jax.Array) -> jax.Array:
        return karras_ramp(t, self.sigma_min, self.sigma_max)

    def __call__(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return self.sigma_of_t(jax.random.uniform(key, shape, jnp.float32))


SIGMA_SAMPLERS = {"cosine_interpolated": CosineInterpolated, "log_normal": LogNormal, "karras": Karras}
