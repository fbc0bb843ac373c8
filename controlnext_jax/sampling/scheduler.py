"""SVD's Euler sampler (diffusers `EulerDiscreteScheduler` as configured by SVD) as pure functions.

The noise schedule is computed once on the host (`make_sigmas`); the per-step maths
are small jit-friendly array functions that take sigma explicitly, so there is no
step counter to keep in sync (diffusers resets its index for every frame window).

SVD's preconditioning, with v-prediction and sigma-space samples:
    model input   = sample / sqrt(sigma^2 + 1)
    model noise   = 0.25 * ln(sigma)                      (the `timesteps`)
    denoised      = out * (-sigma / sqrt(sigma^2 + 1)) + sample / (sigma^2 + 1)
    Euler (churn 0): sample + (sample - denoised) / sigma * (sigma_next - sigma)
All step maths run in float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.models.config_dict import config_from_dict

_RHO = 7.0  # Karras et al.'s rho; diffusers hard-codes it

# diffusers' defaults for keys a scheduler_config.json may leave out
_DIFFUSERS_DEFAULTS = dict(prediction_type="epsilon", timestep_type="discrete", use_karras_sigmas=False,
                           use_exponential_sigmas=False, use_beta_sigmas=False, sigma_min=None, sigma_max=None,
                           timestep_spacing="linspace", final_sigmas_type="zero")

_POSITIVE = {"allowed": "a positive number"}  # what a sigma of the wrong type is told


def _require(key: str, value, allowed: list) -> None:
    if value not in allowed:
        raise UserError(f"SchedulerConfig: {key}={value!r} is not supported; allowed: {allowed}")


@dataclass(frozen=True)
class SchedulerConfig:
    """The fields of diffusers' scheduler_config.json that decide SVD's sampling schedule.

    Defaults are SVD's. The beta fields (`beta_start`, `beta_schedule`, ...) and
    `interpolation_type` are not kept: with explicit `sigma_min`/`sigma_max`, Karras
    sigmas and a zero final sigma, diffusers' schedule does not depend on them
    (`config_dict.IGNORED_KEYS`).
    """

    prediction_type: str = "v_prediction"
    timestep_type: str = "continuous"
    use_karras_sigmas: bool = True
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    sigma_min: float = field(default=0.002, metadata=_POSITIVE)
    sigma_max: float = field(default=700.0, metadata=_POSITIVE)
    timestep_spacing: str = "leading"
    final_sigmas_type: str = "zero"

    def __post_init__(self):
        _require("prediction_type", self.prediction_type, ["v_prediction"])
        _require("timestep_type", self.timestep_type, ["continuous"])
        _require("use_karras_sigmas", self.use_karras_sigmas, [True])
        _require("use_exponential_sigmas", self.use_exponential_sigmas, [False])
        _require("use_beta_sigmas", self.use_beta_sigmas, [False])
        _require("timestep_spacing", self.timestep_spacing, ["leading", "linspace", "trailing"])
        _require("final_sigmas_type", self.final_sigmas_type, ["zero"])
        for key in ("sigma_min", "sigma_max"):
            value = getattr(self, key)
            # without it diffusers derives the range from the training betas, which we do not port
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UserError(f"SchedulerConfig: {key}={value!r} is not supported; allowed: a positive number")
        if not self.sigma_min < self.sigma_max:
            raise UserError(f"SchedulerConfig: sigma_min={self.sigma_min} must be below sigma_max={self.sigma_max}")

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> SchedulerConfig:
        """From a diffusers scheduler_config.json (the policy of `config_dict`); missing keys
        take diffusers' defaults."""
        return config_from_dict(cls, {**_DIFFUSERS_DEFAULTS, **d} if isinstance(d, Mapping) else d, source=source)

    def to_dict(self) -> dict:
        return asdict(self)


def karras_ramp(t, sigma_min: float, sigma_max: float, rho: float = _RHO):
    """Karras et al.'s schedule at positions t in [0, 1] (0: sigma_max, 1: sigma_min), in t's own
    precision (NumPy float64 for `make_sigmas`, JAX float32 for training's `sigmas.Karras`)."""
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (inv_max + t * (inv_min - inv_max)) ** rho


def make_sigmas(config: SchedulerConfig, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Karras sigmas for `num_steps` Euler steps and the model's timesteps, on the host.

    Returns `sigmas` float32 `(num_steps + 1,)` ending in 0 and `timesteps` float32
    `(num_steps,)` = 0.25 * ln(sigma). Both equal diffusers' bit for bit: the ramp is
    evaluated in float64 and rounded once to float32; the log is taken of the rounded
    sigma in float64 and rounded once more.
    """
    if num_steps < 1:
        raise ValueError(f"make_sigmas: num_steps={num_steps} must be at least 1")
    sigmas64 = karras_ramp(np.linspace(0.0, 1.0, num_steps), config.sigma_min, config.sigma_max)
    sigmas = np.concatenate([sigmas64, [0.0]]).astype(np.float32)
    timesteps = (0.25 * np.log(sigmas[:-1].astype(np.float64))).astype(np.float32)
    return sigmas, timesteps


def init_noise_sigma(sigmas: jax.Array, timestep_spacing: str = "leading") -> jax.Array:
    """Standard deviation of the initial latents: sqrt(sigma_max^2 + 1) for `leading`
    spacing (SVD), sigma_max for `linspace`/`trailing`, as diffusers' property."""
    _require("timestep_spacing", timestep_spacing, ["leading", "linspace", "trailing"])
    sigma_max = jnp.max(jnp.asarray(sigmas, jnp.float32))
    return sigma_max if timestep_spacing != "leading" else jnp.sqrt(sigma_max * sigma_max + 1.0)


def scale_model_input(sample: jax.Array, sigma: jax.Array) -> jax.Array:
    """c_in: the UNet sees the sample at unit variance. `sigma` broadcasts against `sample`."""
    sigma = jnp.asarray(sigma, jnp.float32)
    return sample.astype(jnp.float32) / jnp.sqrt(sigma * sigma + 1.0)


def denoised_from_v(model_output: jax.Array, sample: jax.Array, sigma: jax.Array) -> jax.Array:
    """The clean-sample estimate of a v-prediction model (c_out, c_skip)."""
    sigma = jnp.asarray(sigma, jnp.float32)
    c_out = -sigma / jnp.sqrt(sigma * sigma + 1.0)
    return model_output.astype(jnp.float32) * c_out + sample.astype(jnp.float32) / (sigma * sigma + 1.0)


def euler_from_denoised(sample: jax.Array, denoised: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One deterministic Euler step (s_churn 0) in diffusers' operation order:
    d = (sample - denoised) / sigma, then sample + d * (sigma_next - sigma)."""
    return sample + (sample - denoised) / sigma * (sigma_next - sigma)


def euler_step(model_output: jax.Array, sample: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One deterministic Euler step from the model's v-prediction, float32."""
    sample = sample.astype(jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    return euler_from_denoised(sample, denoised_from_v(model_output, sample, sigma), sigma,
                               jnp.asarray(sigma_next, jnp.float32))
