"""The public endpoint's parameters: our user-facing contract (README.md, Animate).

Their names, defaults and ranges, defined once: the animate pipeline's checks, the pose
package's checks, the endpoint request reader and the tests all read this table.
"""

from __future__ import annotations

from typing import NamedTuple


class Parameter(NamedTuple):
    low: float
    high: float
    kind: type
    default: float


PARAMETERS: dict[str, Parameter] = {
    "height": Parameter(64, 1024, int, 1024),
    "width": Parameter(64, 1024, int, 576),
    "guidance_scale": Parameter(0.1, 10.0, float, 3.0),
    "num_inference_steps": Parameter(1, 100, int, 25),
    "max_frame_num": Parameter(1, 1000, int, 240),  # output frames, the reference pose included
    "batch_frames": Parameter(1, 50, int, 24),
    "overlap": Parameter(0, 20, int, 6),
    "sample_stride": Parameter(1, 10, int, 2),
    "decode_chunk_size": Parameter(1, 10, int, 2),
    "motion_bucket_id": Parameter(0.0, 255.0, float, 127.0),
    "fps": Parameter(1, 60, int, 7),
    "controlnext_cond_scale": Parameter(0.1, 10.0, float, 1.0),
}
