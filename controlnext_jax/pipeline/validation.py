"""The animate parameters, their defaults and ranges (the public endpoint's), checked before any model loads.

`validate_params` is pure: a command line can call it on the user's values before it
reads a checkpoint, and the pipeline calls it again at run time with the frame count
and the model's size multiple. Every failure is one `UserError` (a ValueError) line naming the
parameter, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from controlnext_jax.endpoint import PARAMETERS
from controlnext_jax.errors import UserError
from controlnext_jax.sampling.fusion import FUSION_MODES

OUTPUT_TYPES = ("np", "latent")
MAX_FRAMES = int(PARAMETERS["max_frame_num"].high)  # reference pose included

# name -> (low, high, kind) of the call's parameters: the endpoint's (controlnext_jax.endpoint),
# except the two the pose sequence applies (max_frame_num, sample_stride), plus the start of
# the release's guidance ramp, on guidance_scale's range
RANGES: dict[str, tuple[float, float, type]] = {
    name: (p.low, p.high, p.kind) for name, p in PARAMETERS.items() if name not in ("max_frame_num", "sample_stride")
}
RANGES["min_guidance_scale"] = RANGES["guidance_scale"]


@dataclass(frozen=True)
class AnimateParams:
    """What one animate call is asked to do; defaults are the endpoint's (controlnext_jax.endpoint).

    `min_guidance_scale` (not an endpoint parameter) is the first value of the release's
    per-frame guidance ramp linspace(min, max=guidance_scale, batch_frames); None = a flat
    ramp at guidance_scale, as the endpoint runs it. `windows_per_call` None = the
    pipeline's default.
    """

    height: int = PARAMETERS["height"].default
    width: int = PARAMETERS["width"].default
    num_inference_steps: int = PARAMETERS["num_inference_steps"].default
    guidance_scale: float = PARAMETERS["guidance_scale"].default
    min_guidance_scale: float | None = None
    batch_frames: int = PARAMETERS["batch_frames"].default
    overlap: int = PARAMETERS["overlap"].default
    motion_bucket_id: float = PARAMETERS["motion_bucket_id"].default
    fps: int = PARAMETERS["fps"].default
    controlnext_cond_scale: float = PARAMETERS["controlnext_cond_scale"].default
    decode_chunk_size: int = PARAMETERS["decode_chunk_size"].default
    seed: int | None = None
    fusion: str = "uniform"
    windows_per_call: int | None = None
    output_type: str = "np"
    reference_quirks: bool = False

    @property
    def guidance_range(self) -> tuple[float, float]:
        low = self.guidance_scale if self.min_guidance_scale is None else self.min_guidance_scale
        return low, self.guidance_scale


def _check_range(name: str, value, low, high, kind: type) -> None:
    if kind is int:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    what = "an integer" if kind is int else "a number"
    if not ok_type:
        raise UserError(f"{name}={value!r}: must be {what} in {low:g}..{high:g}")
    if not low <= value <= high:
        raise UserError(f"{name}={value!r}: allowed range is {low:g}..{high:g}")


def validate_params(*, num_frames: int | None = None, size_multiple: int = 8, **params) -> AnimateParams:
    """Check every given parameter (others take the defaults) and return them as `AnimateParams`.

    num_frames: the pose frame count when known (it bounds the window layout);
    size_multiple: height and width must be multiples of it (the VAE's downsampling factor).
    Raises UserError (a ValueError) with one line naming the parameter, the value and the allowed range.
    """
    fields = {f.name for f in dataclasses.fields(AnimateParams)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise UserError(f"{unknown[0]}: unknown parameter; allowed: {', '.join(sorted(fields))}")
    p = AnimateParams(**params)
    for name, (low, high, kind) in RANGES.items():
        value = getattr(p, name)
        if value is not None:
            _check_range(name, value, low, high, kind)
    for name in ("height", "width"):
        value = getattr(p, name)
        if value % size_multiple:
            low, high = RANGES[name][:2]
            below = max(value - value % size_multiple, low)
            above = min(below + size_multiple, high)
            raise UserError(f"{name}={value}: allowed: multiples of {size_multiple} in {low}..{high}; "
                             f"the nearest are {below} and {above}")
    if p.fusion not in FUSION_MODES:
        raise UserError(f"fusion={p.fusion!r}: allowed: {', '.join(FUSION_MODES)}")
    if p.output_type not in OUTPUT_TYPES:
        raise UserError(f"output_type={p.output_type!r}: allowed: {', '.join(OUTPUT_TYPES)}")
    if not isinstance(p.reference_quirks, bool):
        raise UserError(f"reference_quirks={p.reference_quirks!r}: allowed: True, False")
    if p.windows_per_call is not None:
        _check_range("windows_per_call", p.windows_per_call, 1, 1024, int)
    if p.seed is not None:
        _check_range("seed", p.seed, 0, 2**63 - 1, int)
    if num_frames is not None:
        _check_range("num_frames", num_frames, 1, MAX_FRAMES, int)
        batch = min(p.batch_frames, num_frames)
        # more frames than one window: windows must advance (the release crashes at
        # overlap == batch_frames and returns NaN above it)
        if num_frames > batch and p.overlap >= batch:
            raise UserError(f"overlap={p.overlap}: allowed range is 0..{batch - 1} (below batch_frames) "
                             f"when the video ({num_frames} frames) is longer than one window")
    return p
