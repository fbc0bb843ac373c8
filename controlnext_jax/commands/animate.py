"""controlnext-animate: a reference image animated by the poses of a driving video.

    controlnext-animate ckpt=/ckpt/controlnext-jax image=ref.png video=dance.mp4 out=dance_ref.mp4
    controlnext-animate ckpt=/ckpt/controlnext-jax request=payload.json out=result.mp4
    controlnext-animate example=true out=example.mp4   (the embedded model on the bundled example)

Order of work, cheapest first, so that every mistake is reported before the model loads:
parameters (the endpoint's ranges, sizes the checkpoint allows), outputs (never an input,
writable), inputs (downloaded when they are URLs, readable), poses (detected and aligned
with `controlnext_jax.pose`, or read from an already rendered pose video), then the
pipeline (`controlnext_jax.load_pipeline`). The four outputs (video, side-by-side
pose|result video, JSON sidecar, the endpoint-style response) appear together or not
at all.
"""

from __future__ import annotations

import contextlib
import json
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from controlnext_jax.atomic_io import atomic_file, check_output
from controlnext_jax.cli import run_command
from controlnext_jax.errors import UserError, require_choice

DTYPES = ("float32", "bfloat16")
VIDEO_SUFFIX = ".mp4"


def output_paths(out: Path) -> dict[str, Path]:
    """The video and the files written beside it (named after it)."""
    return {"out": out, "side_by_side": out.with_name(f"{out.stem}.side_by_side.mp4"),
            "sidecar": out.with_name(f"{out.stem}.json"), "response": out.with_name(f"{out.stem}.response.json")}


def resolve_parameters(cfg: DictConfig, argv: list[str], log=print) -> dict:
    """The config as a plain dict. Precedence, highest first: the command line, a `request=`
    payload's fields (so a payload can be varied from the shell), the checkpoint's own
    `inference_defaults` (pipeline.json: e.g. the embedded model's training size), the
    config's defaults (the endpoint's). ckpt=null is the embedded model; example=true the
    bundled example's image and pose video."""
    from controlnext_jax import embedded
    from controlnext_jax.checkpoint.store import read_pipeline
    from controlnext_jax.pipeline.request import read_request

    params = OmegaConf.to_container(cfg, resolve=True)
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    if cfg.request:
        for key, value in read_request(cfg.request).items():
            if key not in given:
                params[key] = value
                given.add(key)
    if params["example"]:
        if given & {"image", "video", "pose_video"}:
            raise UserError("example=true: brings its own image and pose video; leave image=, video= and "
                            "pose_video= out")
        params["image"], params["pose_video"] = str(embedded.example("image")), str(embedded.example("pose_video"))
    if params["ckpt"] is None:
        params["ckpt"] = str(embedded.checkpoint())
        log(f"[animate] ckpt=null: the embedded model ({params['ckpt']}), a small model trained on synthetic "
            "figures (docs/embedded_model.md); give ckpt= for a real checkpoint")
    defaults = read_pipeline(params["ckpt"]).get("inference_defaults") or {}
    applied = {k: v for k, v in defaults.items() if k in params and k not in given}
    params.update(applied)
    if applied:
        log(f"[animate] the checkpoint's settings: {', '.join(f'{k}={v}' for k, v in applied.items())}")
    return params


def check_parameters(params: dict) -> dict:
    """Every parameter against its allowed values (no file is opened but pipeline.json);
    returns the animate call's keyword arguments."""
    from controlnext_jax.pipeline import size_multiple, validate_params
    from controlnext_jax.pose.video import ALIGN_MODES, check_int

    require_choice("dtype", params["dtype"], (None, *DTYPES))
    require_choice("example", params.get("example", False), (True, False))
    require_choice("memory_saving", params["memory_saving"], (True, False))
    require_choice("align", params["align"], ALIGN_MODES)
    for name in ("max_frame_num", "sample_stride"):
        check_int(name, params[name])
    if not params.get("image"):
        raise UserError("image: required (a path, file:// or http(s):// URL), or request=payload.json")
    if bool(params.get("video")) == bool(params.get("pose_video")):
        raise UserError("give exactly one of video= (poses are detected) or pose_video= (rendered poses, used as is)")
    if not str(params["out"]).lower().endswith(VIDEO_SUFFIX):
        raise UserError(f"out={params['out']}: must name an {VIDEO_SUFFIX} file")
    call = {k: params[k] for k in ("height", "width", "num_inference_steps", "guidance_scale", "batch_frames",
                                   "overlap", "motion_bucket_id", "fps", "controlnext_cond_scale",
                                   "decode_chunk_size", "seed", "fusion", "windows_per_call", "reference_quirks")}
    validate_params(size_multiple=size_multiple(params["ckpt"]), **call)
    return call


def check_window_layout(call: dict, num_frames: int) -> None:
    from controlnext_jax.pipeline import validate_params

    validate_params(num_frames=num_frames, **{k: call[k] for k in ("batch_frames", "overlap")})


def read_pose_video(path: Path, params: dict) -> np.ndarray:
    """A rendered pose video (first frame = the reference pose), at most max_frame_num frames,
    resized to cover (height, width) and centre-cropped when its size differs."""
    from controlnext_jax.pose.media import decode_frames
    from controlnext_jax.pose.video import prepare_reference

    h, w = params["height"], params["width"]
    frames = []
    decoded = decode_frames(path, "pose_video")
    try:
        for frame in decoded:
            frames.append(frame if frame.shape[:2] == (h, w) else prepare_reference(frame, h, w))
            if len(frames) >= params["max_frame_num"]:
                break
    finally:
        decoded.close()
    return np.stack(frames)


def detect_poses(image: np.ndarray, video: Path, params: dict, pose_cfg: DictConfig) -> tuple[np.ndarray, dict]:
    from controlnext_jax.commands.pose import instantiate_detector
    from controlnext_jax.pose.video import extract_pose_sequence

    detector = instantiate_detector(pose_cfg)
    try:
        seq = extract_pose_sequence(detector, image, str(video), height=params["height"], width=params["width"],
                                    max_frame_num=params["max_frame_num"], sample_stride=params["sample_stride"],
                                    align=params["align"], progress=params["progress"])
    finally:
        if hasattr(detector, "close"):
            detector.close()
    info = {"detector": pose_cfg.get("_target_"), "align": params["align"], "rescale": seq.rescale.to_json(),
            "driving_video_fps": seq.video.fps, "warnings": seq.warnings}
    return np.stack(list(seq.render())), info


def animate(cfg: DictConfig, argv: list[str]) -> None:
    from controlnext_jax.checkpoint.store import checkpoint_digest
    from controlnext_jax.pipeline.request import fetch_input
    from controlnext_jax.pose.media import load_image
    from controlnext_jax.pose.video import prepare_reference

    timings: dict[str, float] = {}
    start = time.perf_counter()
    params = resolve_parameters(cfg, argv)
    call = check_parameters(params)
    if call["seed"] is None:
        call["seed"] = secrets.randbits(31)  # drawn here so the sidecar can record it

    inputs = {name: params.get(name) for name in ("image", "video", "pose_video", "ckpt", "request")}
    local_inputs = {k: v for k, v in inputs.items() if v and "://" not in str(v)}
    paths = output_paths(check_output(params["out"], inputs=local_inputs, overwrite=params["overwrite"], kind="file"))
    for name, path in paths.items():
        if name != "out":
            check_output(path, inputs=local_inputs, overwrite=params["overwrite"], param=f"out ({name})", kind="file")

    with tempfile.TemporaryDirectory(prefix="controlnext-animate-") as downloads:
        folder = Path(downloads)
        image_path = fetch_input(params["image"], "image", folder)
        image = load_image(image_path)
        source = fetch_input(params["video"] or params["pose_video"], "video" if params["video"] else "pose_video",
                             folder)
        timings["inputs_s"] = time.perf_counter() - start

        t = time.perf_counter()
        if params["video"]:
            poses, pose_info = detect_poses(image, source, params, cfg.pose)
        else:
            poses, pose_info = read_pose_video(source, params), {"pose_video": str(params["pose_video"])}
        check_window_layout(call, len(poses))
        timings["pose_s"] = time.perf_counter() - t

    from controlnext_jax.pipeline import load_pipeline

    t = time.perf_counter()
    # null dtype: load_pipeline's choice (bfloat16 with memory_saving), recorded as resolved
    params["dtype"] = params["dtype"] or ("bfloat16" if params["memory_saving"] else "float32")
    pipe = load_pipeline(params["ckpt"], params["dtype"], memory_saving=params["memory_saving"],
                         compilation_cache_dir=params["compilation_cache"])
    timings["load_s"] = time.perf_counter() - t
    reference = prepare_reference(image, params["height"], params["width"])
    frames, run_timings = pipe.run(reference, poses, progress=params["progress"], **call)
    timings.update(run_timings)

    sidecar = {
        "parameters": {**{k: params[k] for k in ("image", "video", "pose_video", "request", "ckpt", "dtype", "memory_saving",
                                                 "align", "max_frame_num", "sample_stride")}, **call},
        "seed": call["seed"],
        "frames": int(frames.shape[0]),
        "checkpoint_digest": checkpoint_digest(params["ckpt"]),
        "poses": pose_info,
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    write_outputs(paths, frames, poses, params["fps"], sidecar)
    print(f"[animate] wrote {paths['out']} ({frames.shape[0]} frames of height {params['height']} x "
          f"width {params['width']} at {params['fps']} fps), {paths['side_by_side'].name}, {paths['sidecar'].name}, "
          f"{paths['response'].name}; compile {timings['compile_s']:.1f} s, denoise+decode "
          f"{timings['denoise_decode_s']:.1f} s, pose {timings['pose_s']:.1f} s, load {timings['load_s']:.1f} s")


def versions() -> dict:
    import flax
    import jax

    from controlnext_jax.provenance import code_version

    return {"code": code_version(), "jax": jax.__version__, "flax": flax.__version__,
            "python": platform.python_version(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}


def write_outputs(paths: dict[str, Path], frames: np.ndarray, poses: np.ndarray, fps: int, sidecar: dict) -> None:
    """All four files under temporary names; renamed only when every one is complete."""
    from controlnext_jax.pipeline.request import response_json
    from controlnext_jax.pose.media import encode_video

    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_file(path, param="out")) for name, path in paths.items()}
        encode_video(str(tmp["out"]), paths["out"], frames, fps, "out")
        encode_video(str(tmp["side_by_side"]), paths["side_by_side"],
                (np.concatenate([p, f], axis=1) for p, f in zip(poses, frames)), fps, "out")
        tmp["sidecar"].write_text(json.dumps(sidecar, indent=2))
        # the response names the final video; its size is the finished temporary file's
        response = response_json(paths["out"], tmp["out"].stat().st_size)
        tmp["response"].write_text(json.dumps(response, indent=2))


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("controlnext-animate", "animate", lambda cfg: animate(cfg, argv), argv)


if __name__ == "__main__":
    main()
