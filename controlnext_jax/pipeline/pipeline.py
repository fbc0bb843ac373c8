"""`load_pipeline` and the animate call: reference image + pose frames -> video (docs/sampling.md).

The pipeline holds each network once, as `nnx.split` parameter states, and one jitted
program (`program.run_program`) that runs everything from the reference encodings to
the decoded frames (on several devices the decode is a second program: see
`StagedProgram`). Host-side work per call is parameter checking, noise drawing and the
window table; calls with the same shapes reuse the compiled program.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.checkpoint.store import load_component, read_pipeline
from controlnext_jax.models.components import COMPONENTS
from controlnext_jax.pipeline.memory_saving import memory_saving_graphdefs
from controlnext_jax.pipeline.program import decode_latents, run_program
from controlnext_jax.pipeline.sharding import batch_constraint, make_mesh, replicate, windows_per_call_for
from controlnext_jax.pipeline.validation import AnimateParams, validate_params
from controlnext_jax.sampling.conditioning import added_time_ids
from controlnext_jax.sampling.scheduler import SchedulerConfig, init_noise_sigma, make_sigmas
from controlnext_jax.sampling.window_plan import plan_windows

DEFAULT_CACHE_DIR = Path("~/.cache/controlnext-jax/jax_cache")
_COMPONENTS = ("unet", "vae", "image_encoder", "controlnext")
_DTYPES = ("float32", "bfloat16")


def enable_compilation_cache(path: str | os.PathLike | None) -> None:
    """Point JAX's persistent compilation cache at `path` (None: leave JAX's setting alone)."""
    if path is None:
        return
    from jax.experimental.compilation_cache import compilation_cache

    path = str(Path(path).expanduser())
    if jax.config.jax_compilation_cache_dir != path:
        Path(path).mkdir(parents=True, exist_ok=True)
        compilation_cache.set_cache_dir(path)
        compilation_cache.reset_cache()  # re-read the directory on the next compilation


class StagedProgram:
    """The animate program as two compiled programs run back to back on the same devices:
    sampling to latents, then the decode of those latents (which stay on the devices).

    Used on several devices. There XLA:CPU (jax 0.10.2, emulated devices) returns wrong
    decoded frames, nondeterministically, when the decode runs in the same program as the
    sampling loop, while the same decode compiled on its own is right (docs/sampling.md,
    Several devices). `sample` and `decode` are the two `jax.stages.Compiled`."""

    def __init__(self, sample: jax.stages.Compiled, decode: jax.stages.Compiled):
        self.sample, self.decode = sample, decode

    def __call__(self, params: dict, inputs: dict) -> jax.Array:
        return self.decode(params["vae"], self.sample(params, inputs))


def vae_scale_factor(vae_config) -> int:
    return 2 ** (len(vae_config.block_out_channels) - 1)


def size_multiple(ckpt: str | os.PathLike) -> int:
    """What height and width must be multiples of for this checkpoint (read from its config only)."""
    meta = read_pipeline(ckpt)
    return vae_scale_factor(COMPONENTS["vae"].config_from_dict(meta["components"]["vae"]))


class ControlNeXtPipeline:
    """Animate a reference image with pose frames. Build with `load_pipeline`."""

    def __init__(self, graphdefs: dict, params: dict, configs: dict, scheduler: SchedulerConfig, *,
                 devices: Sequence[jax.Device] | None = None, windows_per_call: int | None = None,
                 memory_saving: bool = False):
        """params: the `nnx.split` states; `jax.ShapeDtypeStruct` leaves give a pipeline that can
        only `compile` (memory and cost analysis without weights). memory_saving: see
        `load_pipeline` (the parameters' dtype is the caller's choice here)."""
        if windows_per_call is not None and (not isinstance(windows_per_call, int) or windows_per_call < 1):
            raise ValueError(f"windows_per_call={windows_per_call!r}: allowed: an integer >= 1 or None")
        if not isinstance(memory_saving, bool):
            raise ValueError(f"memory_saving={memory_saving!r}: allowed: True, False")
        self.memory_saving = memory_saving
        if memory_saving:
            graphdefs = memory_saving_graphdefs(graphdefs, params)
        self.configs = configs
        self.graphdefs = graphdefs
        self.scheduler = scheduler
        self.mesh = make_mesh(devices)
        self.devices = list(devices) if devices is not None else jax.devices()
        self.windows_per_call = windows_per_call
        self.size_multiple = vae_scale_factor(configs["vae"])
        abstract = all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
        self._params = params if abstract else replicate(params, self.mesh, self.devices[0] if self.mesh is None else None)
        self.trace_count = 0  # how often the program was traced (once per new shape set)

        self._on_group = None  # host hook for the progress bar: (step, group) -> None, set per call

        def window_group_done(step, group):
            if self._on_group is not None:
                self._on_group(int(step), int(group))

        def animate_program(*args, progress: bool, **kwargs):
            self.trace_count += 1
            # JAX does not keep programs with host callbacks in its persistent compilation
            # cache, so the progress hook is compiled in only when a bar is asked for
            return run_program(graphdefs, batch_constraint(self.mesh), *args, separate_cfg=memory_saving,
                               on_window_group=window_group_done if progress else None,
                               devices=len(self.devices), **kwargs)

        static = ("cfg", "output_type", "decode_chunk_size", "scaling_factor", "progress")
        self._program = jax.jit(animate_program, static_argnames=static)

        def decode_program(vae_params, latents, *, decode_chunk_size: int, scaling_factor: float):
            vae = nnx.merge(graphdefs["vae"], vae_params)
            return decode_latents(vae, latents, decode_chunk_size, scaling_factor, devices=len(self.devices),
                                  constrain=batch_constraint(self.mesh))

        self._decode_program = jax.jit(decode_program, static_argnames=("decode_chunk_size", "scaling_factor"))
        # compiled executables by shape set: compiled ahead of the call so compile time is
        # measured apart from sampling, and never repeated for shapes seen before
        self._executables: dict = {}

    @property
    def compile_count(self) -> int:
        """Compiled variants of the program held in memory (one per shape set and static option; on
        several devices a decoding call holds two: its `StagedProgram` and the latent call's
        program, which is its sampling stage)."""
        return len(self._executables)

    def _executable(self, inputs: dict, static: dict):
        leaves, tree = jax.tree.flatten(inputs)
        key = (tree, tuple((x.shape, x.dtype, x.sharding) for x in leaves), tuple(sorted(static.items())))
        if key not in self._executables:
            if self.mesh is not None and static["output_type"] != "latent":
                self._executables[key] = self._staged_executable(inputs, static)
            else:
                self._executables[key] = self._program.lower(self._params, inputs, **static).compile()
        return self._executables[key]

    def _staged_executable(self, inputs: dict, static: dict) -> StagedProgram:
        # the sampling stage is the latent call's program: compiled once for both kinds of call
        sample = self._executable(inputs, {**static, "output_type": "latent"})
        decode = self._decode_program.lower(self._params["vae"], sample.out_info,
                                            decode_chunk_size=static["decode_chunk_size"],
                                            scaling_factor=static["scaling_factor"]).compile()
        return StagedProgram(sample, decode)

    def compile(self, image: np.ndarray, poses: np.ndarray, **params) -> jax.stages.Compiled | StagedProgram:
        """The compiled program of a call with these arguments, without running it (cached like a
        call's): for `memory_analysis()` / `cost_analysis()`, or to keep compilation apart from a
        timed run. Works on a pipeline built with abstract parameters. On several devices a call
        that decodes gives a `StagedProgram` (its `.sample` and `.decode` are the compiled stages)."""
        poses = np.asarray(poses)
        p = validate_params(num_frames=poses.shape[0] if poses.ndim == 4 else None,
                            size_multiple=self.size_multiple, **params)
        return self._executable(*self.prepare(image, poses, p))

    def set_params(self, params: dict) -> None:
        """Swap in new parameter states of the same shapes and dtypes (e.g. a training run's
        current weights); the compiled programs are kept."""
        self._params = replicate(params, self.mesh, self.devices[0] if self.mesh is None else None)

    def __call__(self, image: np.ndarray, poses: np.ndarray, *, height: int = 1024, width: int = 576,
                 num_inference_steps: int = 25, guidance_scale: float = 3.0, min_guidance_scale: float | None = None,
                 batch_frames: int = 24, overlap: int = 6, motion_bucket_id: float = 127.0, fps: int = 7,
                 controlnext_cond_scale: float = 1.0, decode_chunk_size: int = 2, seed: int | None = None,
                 latents: np.ndarray | None = None, image_noise: np.ndarray | None = None,
                 fusion: str = "uniform", windows_per_call: int | None = None, output_type: str = "np",
                 reference_quirks: bool = False) -> np.ndarray:
        """image: uint8 (height, width, 3), or any size (then cover-resized and centre-cropped as
        the release does); poses: uint8 (F, height, width, 3), the reference pose first.
        latents: optional float32 (1, F, h, w, 4) standard-normal initial noise (scaled by the
        scheduler's initial sigma here, like diffusers' `latents=`); image_noise: optional
        float32 (1, height, width, 3) standard-normal noise of the reference's 0.02
        augmentation; both drawn from `seed` when not given.
        Returns uint8 frames (F, height, width, 3), or with output_type="latent" the final
        latents float32 (1, F, h, w, 4)."""
        poses = np.asarray(poses)
        num_frames = poses.shape[0] if poses.ndim == 4 else None
        p = validate_params(num_frames=num_frames, size_multiple=self.size_multiple, height=height, width=width,
                            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                            min_guidance_scale=min_guidance_scale, batch_frames=batch_frames, overlap=overlap,
                            motion_bucket_id=motion_bucket_id, fps=fps, controlnext_cond_scale=controlnext_cond_scale,
                            decode_chunk_size=decode_chunk_size, seed=seed, fusion=fusion,
                            windows_per_call=windows_per_call, output_type=output_type,
                            reference_quirks=reference_quirks)
        return self._execute(image, poses, p, latents=latents, image_noise=image_noise)[0]

    def run(self, image: np.ndarray, poses: np.ndarray, *, progress: bool = False, latents: np.ndarray | None = None,
            image_noise: np.ndarray | None = None, **params) -> tuple[np.ndarray, dict[str, float]]:
        """`__call__` with timings ({"compile_s", "denoise_decode_s"}: compilation, ~0 for shapes
        already compiled, apart from the run) and, with `progress`, a bar over steps x window
        groups that shows their rate. The bar needs a host callback inside the program, and JAX
        does not store such programs in its persistent compilation cache: with `progress` the
        program is compiled in every new process, without it a later process loads it."""
        poses = np.asarray(poses)
        p = validate_params(num_frames=poses.shape[0] if poses.ndim == 4 else None,
                            size_multiple=self.size_multiple, **params)
        return self._execute(image, poses, p, latents=latents, image_noise=image_noise, progress=progress)

    def _execute(self, image, poses, p: AnimateParams, *, latents=None, image_noise=None,
                 progress: bool = False) -> tuple[np.ndarray, dict[str, float]]:
        inputs, static = self.prepare(image, poses, p, latents=latents, image_noise=image_noise)
        static["progress"] = bool(progress)
        start = time.perf_counter()
        executable = self._executable(inputs, static)
        compiled = time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            groups = inputs["plan"]["frame_index"].shape[0]
            bar = tqdm(total=p.num_inference_steps * groups, unit="window group",
                       desc=f"denoise ({p.num_inference_steps} steps x {groups} window groups)")
            seen = set()

            def advance(step: int, group: int) -> None:
                if (step, group) not in seen:  # once per group, however many devices report it
                    seen.add((step, group))
                    bar.update(1)

            self._on_group = advance
        try:
            out = np.asarray(executable(self._params, inputs))
        finally:
            self._on_group = None
            if bar is not None:
                bar.close()
        timings = {"compile_s": compiled - start, "denoise_decode_s": time.perf_counter() - compiled}
        return (out[None] if p.output_type == "latent" else out), timings

    def prepare(self, image: np.ndarray, poses: np.ndarray, p: AnimateParams, *, latents=None,
                image_noise=None) -> tuple[dict, dict]:
        """Host side of a call: checked arrays, noise, schedule, conditioning values and window table."""
        from controlnext_jax.pose.video import prepare_reference

        h, w = p.height, p.width
        if poses.dtype != np.uint8 or poses.ndim != 4 or poses.shape[1:] != (h, w, 3):
            raise ValueError(f"poses: uint8 array (frames, {h}, {w}, 3) expected, got {poses.dtype} {poses.shape}")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image: uint8 array (height, width, 3) expected, got {image.dtype} {image.shape}")
        if image.shape[:2] != (h, w):
            image = prepare_reference(image, h, w)
        num_frames = poses.shape[0]
        f = self.size_multiple
        latent_shape = (1, num_frames, h // f, w // f, self.configs["vae"].latent_channels)
        rng = np.random.default_rng(p.seed if p.seed is not None else secrets.randbits(63))
        # drawn in the release's order (pixel noise first), whichever are given
        image_noise = _noise("image_noise", image_noise, (1, h, w, 3), rng)
        latents = _noise("latents", latents, latent_shape, rng)

        sigmas, c_noise = make_sigmas(self.scheduler, p.num_inference_steps)
        init_sigma = init_noise_sigma(sigmas, self.scheduler.timestep_spacing)

        low, high = p.guidance_range
        # the release turns CFG off below 1 (and ignores the value); default mode guides at every
        # value so the whole endpoint range takes effect (docs/sampling.md, Default mode and ...)
        cfg = high >= 1.0 if p.reference_quirks else True
        batch = min(p.batch_frames, num_frames)
        guidance = np.linspace(low, high, batch, dtype=np.float64).astype(np.float32)
        ids = added_time_ids(p.fps, p.motion_bucket_id, 0.02, reproduce_original=p.reference_quirks)[0]
        # the release ignores controlnext_cond_scale: the control weight is its module's 1.0 (x 0.2)
        control_scale = np.float32(1.0 if p.reference_quirks else p.controlnext_cond_scale)

        requested = p.windows_per_call if p.windows_per_call is not None else self.windows_per_call
        if self.memory_saving and requested is None:
            requested = 1  # one window per call; an explicit windows_per_call still wins
        # with memory_saving each UNet call holds one CFG half (docs/sampling.md, Memory saving)
        halves = 2 if cfg and not self.memory_saving else 1
        probe = plan_windows(num_frames, p.batch_frames, p.overlap, fusion=p.fusion)
        wpc = windows_per_call_for(requested, probe.num_windows, halves, len(self.devices))
        plan = plan_windows(num_frames, p.batch_frames, p.overlap, fusion=p.fusion, windows_per_call=wpc)

        # [-1, 1] in float32 as diffusers' image processor computes it
        reference = (image.astype(np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0)
        inputs = {
            "reference": reference[None], "image_noise": image_noise, "noise": latents[0], "poses": poses,
            "sigmas": sigmas, "c_noise": c_noise, "init_sigma": np.float32(init_sigma),
            "added_time_ids": ids, "control_scale": control_scale, "guidance": guidance, "plan": plan.arrays(),
        }
        inputs = replicate(jax.tree.map(jnp.asarray, inputs), self.mesh,
                           self.devices[0] if self.mesh is None else None)
        static = dict(cfg=cfg, output_type=p.output_type, decode_chunk_size=p.decode_chunk_size, progress=False,
                      scaling_factor=float(self.configs["vae"].scaling_factor))
        return inputs, static


def _noise(name: str, given, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    drawn = rng.standard_normal(shape, dtype=np.float32)
    if given is None:
        return drawn
    given = np.asarray(given)
    if given.shape != shape or not np.issubdtype(given.dtype, np.floating):
        raise ValueError(f"{name}: float array of shape {shape} expected, got {given.dtype} {given.shape}")
    return given.astype(np.float32)


def load_pipeline(ckpt: str | os.PathLike, dtype: str | None = None, *,
                  devices: Sequence[jax.Device] | None = None, windows_per_call: int | None = None,
                  memory_saving: bool = False,
                  compilation_cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR) -> ControlNeXtPipeline:
    """Load a `controlnext-convert` folder. dtype: "float32" or "bfloat16" for the networks'
    parameters and activations (the VAE stays float32 when its config says force_upcast, as
    diffusers does; sampling maths is float32 either way); None: float32, or bfloat16 with
    memory_saving. devices: where to run (default: all visible; several devices share each
    window group's batch). memory_saving: the CFG halves as two UNet calls, one window per
    call, UNet/VAE attention in bounded pieces, so the endpoint defaults fit a 24 GB device
    (docs/sampling.md, Memory saving). compilation_cache_dir: JAX's persistent compilation
    cache (None: leave JAX's setting alone)."""
    if dtype is None:
        dtype = "bfloat16" if memory_saving else "float32"
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: allowed: {', '.join(_DTYPES)}")
    enable_compilation_cache(compilation_cache_dir)
    meta = read_pipeline(ckpt)
    configs = {name: COMPONENTS[name].config_from_dict(meta["components"][name]) for name in _COMPONENTS}
    # SVD's scheduler when the folder carries none
    scheduler = SchedulerConfig.from_dict(meta["scheduler"]) if meta.get("scheduler") else SchedulerConfig()
    graphdefs, params = {}, {}
    for name in _COMPONENTS:
        param_dtype = jnp.dtype(dtype)
        if name == "vae" and configs["vae"].force_upcast:
            param_dtype = jnp.float32
        # split right away: the pipeline keeps only the parameter state, one copy
        graphdefs[name], params[name] = nnx.split(load_component(ckpt, name, param_dtype=param_dtype))
    return ControlNeXtPipeline(graphdefs, params, configs, scheduler, devices=devices,
                               windows_per_call=windows_per_call, memory_saving=memory_saving)

