"""The GPU suite: every speed and memory figure of the animate pipeline in one run, one table.

    python benchmarks/gpu_suite.py RESULTS_DIR --size full [--budget-s 450]   (benchmarks/gpu_suite.sh)
    python benchmarks/gpu_suite.py RESULTS_DIR --size toy                     (CI, on the CPU)

Rows (BENCHMARKS.md, GPU suite):
- the device's bfloat16 matmul rate (8192^3), the reference of every "fraction of peak";
- one 24-frame CFG window step (ControlNeXt + UNet on the batch of two halves + guidance)
  at 1024x576 (latents 128x72): JAX bfloat16 with cuDNN attention, JAX float32, PyTorch
  float16 with SDPA, PyTorch float32 (the release's setting). FLOPs are XLA's cost analysis
  of the JAX program (the PyTorch rows compute the same maths and are rated with the same
  count); memory is XLA's memory analysis for JAX, `torch.cuda.max_memory_allocated` for
  PyTorch;
- the whole endpoint-default video (151 frames: 9 windows x 25 steps, CFG, decode chunk 2)
  in the normal mode (bfloat16, cuDNN attention on a GPU) and with `memory_saving=True`:
  compile time apart, seconds end to end and per output frame, the device's peak memory
  (each video runs in a fresh process, so JAX's `peak_bytes_in_use` is its own) next to
  the peak predicted from the compiled program.

Weights are random and built on the machine (no checkpoint travels), independently in each
framework: the rows time the same architecture and shapes, not the same numbers (equality
of the two implementations is tested at tiny size and in BENCHMARKS.md's CPU UNet row).
`--size toy` runs the same code with configs/model/tiny.yaml at 64x64 and a few frames and
steps; rows that need a GPU (cuDNN attention, device memory statistics) say "n/a on cpu"
and run their CPU equivalent. Items that would overrun `--budget-s` are skipped (marked).
The table is rewritten after every item (RESULTS_DIR/gpu_suite.md and .json), so a run cut
short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share the device

GIB = 2**30
# name -> (what it measures, full-size estimate in seconds used by the budget check)
ITEMS = {
    "matmul_peak": ("bf16 matmul peak", 20),
    "window_jax_bf16": ("window step: JAX bfloat16, cuDNN attention", 90),
    "window_jax_f32": ("window step: JAX float32", 90),
    "window_torch_fp16": ("window step: PyTorch float16, SDPA", 60),
    "window_torch_fp32": ("window step: PyTorch float32 (the release)", 60),
    "video_normal": ("video: JAX bfloat16, normal mode", 150),
    "video_memory_saving": ("video: JAX memory_saving=True", 180),
}
SIZES = {
    # model config, matmul n, (height, width), window frames, video frames, steps, overlap, timing repeats
    "full": dict(model="svd_xt", matmul=8192, hw=(1024, 576), window=24, frames=151, steps=25, overlap=6, repeats=3),
    "toy": dict(model="tiny", matmul=512, hw=(64, 64), window=6, frames=10, steps=2, overlap=2, repeats=2),
}


def on_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


def median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn (which blocks until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def predicted_peak(compiled) -> float:
    """Bytes XLA's buffer assignment needs for a compiled program: arguments + outputs + temporaries
    (less what outputs alias), in GiB."""
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes) / GIB


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


# --------------------------------------------------------------------------------------- items


def matmul_peak(size: dict) -> dict:
    import jax
    import jax.numpy as jnp

    n = size["matmul"]
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.bfloat16) for i in (0, 1))
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, b).block_until_ready()
    seconds = median_time(lambda: mm(a, b).block_until_ready(), 10)
    flops = 2.0 * n**3
    return {"seconds": seconds, "flops": flops, "tflops_s": flops / seconds / 1e12, "setting": f"{n}^3 bf16"}


def _jax_models(configs: dict, dtype, attention: str | None):
    """Random-weight JAX UNet and ControlNeXt (the models' own initialisers, on the default device)."""
    from flax import nnx

    from controlnext_jax.models.attention import set_attention_implementation
    from controlnext_jax.models.components import COMPONENTS

    models = {}
    for name in ("unet", "controlnext"):
        component = COMPONENTS[name]
        config = component.config_from_dict(configs[name])
        models[name] = component.classes()[1](config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    set_attention_implementation(models["unet"], attention)
    return models


def window_jax(size: dict, dtype_name: str) -> dict:
    """One CFG window step through the pipeline's own model function (program.controlnext_svd_model)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from controlnext_jax.pipeline.program import controlnext_svd_model
    from controlnext_jax.testing.torch_checkpoints import model_configs

    dtype = jnp.dtype(dtype_name)
    gpu = on_gpu()
    attention = "cudnn" if gpu and dtype == jnp.bfloat16 else None
    configs = model_configs(size["model"])
    models = _jax_models(configs, dtype, attention)
    graphdefs, params = zip(*(nnx.split(models[n]) for n in ("unet", "controlnext")))
    del models
    (height, width), frames = size["hw"], size["window"]
    h, w = height // 8, width // 8
    dim = configs["unet"]["cross_attention_dim"]
    rng = np.random.default_rng(0)
    inputs = {
        "x_in": rng.standard_normal((1, frames, h, w, 4), dtype=np.float32),
        "poses": rng.random((frames, height, width, 3), dtype=np.float32),
        "image_latents": rng.standard_normal((1, h, w, 4), dtype=np.float32),
        "image_embeds": rng.standard_normal((1, dim), dtype=np.float32),
        "c_noise": np.float32(0.25 * np.log(700.0)),
    }
    inputs = jax.tree.map(jnp.asarray, inputs)

    def step(params, inputs):
        unet, controlnext = (nnx.merge(g, p) for g, p in zip(graphdefs, params))
        model = controlnext_svd_model(
            unet, controlnext, image_embeds=inputs["image_embeds"], image_latents=inputs["image_latents"],
            poses=inputs["poses"], added_time_ids=jnp.array([6.0, 127.0, 0.02]), control_scale=jnp.float32(1.0),
            guidance=jnp.full((frames,), 3.0, jnp.float32), cfg=True, constrain=lambda x: x,
            unet_dtype=dtype, control_dtype=dtype)
        return model(inputs["x_in"], inputs["c_noise"], jnp.arange(frames)[None])

    start = time.perf_counter()
    compiled = jax.jit(step).lower(params, inputs).compile()
    compile_s = time.perf_counter() - start
    compiled(params, inputs).block_until_ready()
    seconds = median_time(lambda: compiled(params, inputs).block_until_ready(), size["repeats"])
    flops = flops_of(compiled)
    note = "cuDNN attention" if attention else ("cuDNN n/a on cpu (XLA attention)" if dtype == jnp.bfloat16
                                                else "XLA attention")
    return {"seconds": seconds, "compile_s": compile_s, "flops": flops, "tflops_s": flops / seconds / 1e12,
            "predicted_gib": predicted_peak(compiled), "measured_gib": None, "note": note,
            "setting": f"{frames} frames, {height}x{width}, CFG batch 2"}


def window_torch(size: dict, dtype_name: str, flops: float | None) -> dict:
    """The same window step in PyTorch: diffusers' UNet with the control hook, our torch ControlNeXt."""
    import numpy as np
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from controlnext_jax.testing.torch_checkpoints import model_configs
    from controlnext_jax.testing.torch_controlnext import TorchControlNeXt, hook_control_into_unet
    from controlnext_jax.testing.torch_random import randomize_

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, dtype_name)
    configs = model_configs(size["model"])
    fields = {k: v for k, v in configs["controlnext"].items() if not k.startswith("_")}
    unet = randomize_(UNetSpatioTemporalConditionModel.from_config(configs["unet"]), 0).to(device, dtype)
    controlnext = randomize_(TorchControlNeXt(**fields), 1).to(device, dtype)
    (height, width), frames = size["hw"], size["window"]
    h, w = height // 8, width // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, frames, 4, h, w, generator=g).to(device, dtype)
    ref = torch.randn(1, 1, 4, h, w, generator=g).expand(1, frames, 4, h, w).to(device, dtype)
    pose = torch.rand(1, frames, 3, height, width, generator=g).to(device, dtype)
    embeds = torch.randn(1, 1, configs["unet"]["cross_attention_dim"], generator=g).to(device, dtype)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2, device=device, dtype=dtype)
    t = torch.tensor(0.25 * np.log(700.0), device=device, dtype=dtype)
    scale = torch.tensor([0.0] * frames + [1.0] * frames, device=device, dtype=dtype).view(-1, 1, 1, 1)

    @torch.no_grad()
    def step():
        control = controlnext(pose, t)
        handle = hook_control_into_unet(unet, torch.cat([control, control]), scale)
        try:
            sample = torch.cat([torch.cat([x, x]), torch.cat([torch.zeros_like(ref), ref])], dim=2)
            context = torch.cat([torch.zeros_like(embeds), embeds])
            v = unet(sample, t, encoder_hidden_states=context, added_time_ids=ids).sample
        finally:
            handle.remove()
        v_uncond, v_cond = v.float().chunk(2)
        out = v_uncond + 3.0 * (v_cond - v_uncond)
        if cuda:
            torch.cuda.synchronize()
        return out

    step()  # warm-up (cuDNN algorithm choice)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = median_time(step, size["repeats"])
    measured = torch.cuda.max_memory_allocated() / GIB if cuda else None
    row = {"seconds": seconds, "flops": flops, "measured_gib": measured, "setting": f"{frames} frames, "
           f"{height}x{width}, CFG batch 2", "note": "SDPA attention" + ("" if cuda else "; memory n/a on cpu")}
    if flops:
        row["tflops_s"] = flops / seconds / 1e12
    if cuda:
        torch.cuda.empty_cache()
    return row


def random_pipeline(size: dict, dtype_name: str, memory_saving: bool, attention: str | None):
    """A ControlNeXtPipeline over random-weight JAX networks built here (the VAE in float32, as
    its force_upcast config asks, like load_pipeline)."""
    import jax.numpy as jnp
    from flax import nnx

    from controlnext_jax.models.attention import set_attention_implementation
    from controlnext_jax.models.components import COMPONENTS
    from controlnext_jax.pipeline.pipeline import ControlNeXtPipeline
    from controlnext_jax.sampling.scheduler import SchedulerConfig
    from controlnext_jax.testing.torch_checkpoints import model_configs

    raw = model_configs(size["model"])
    configs = {n: COMPONENTS[n].config_from_dict(raw[n]) for n in ("unet", "vae", "image_encoder", "controlnext")}
    graphdefs, params = {}, {}
    for name, config in configs.items():
        dtype = jnp.float32 if name == "vae" and config.force_upcast else jnp.dtype(dtype_name)
        module = COMPONENTS[name].classes()[1](config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
        if name == "unet" and attention:
            set_attention_implementation(module, attention)
        graphdefs[name], params[name] = nnx.split(module)
    return ControlNeXtPipeline(graphdefs, params, configs, SchedulerConfig.from_dict(raw["scheduler"]),
                               memory_saving=memory_saving)


def video(size: dict, memory_saving: bool) -> dict:
    """The endpoint-default video end to end (run in its own process: the device's peak is its own)."""
    import jax
    import numpy as np

    from controlnext_jax.sampling.windows import window_starts

    gpu = on_gpu()
    # normal mode: cuDNN flash attention on a GPU (XLA's attention would hold 24 x 5 x 9216^2
    # logits per half); memory_saving: as load_pipeline builds it (chunked attention)
    attention = "cudnn" if gpu and not memory_saving else None
    pipe = random_pipeline(size, "bfloat16", memory_saving, attention)
    (height, width), frames = size["hw"], size["frames"]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    call = dict(height=height, width=width, num_inference_steps=size["steps"], batch_frames=size["window"],
                overlap=size["overlap"], decode_chunk_size=2, seed=0)
    start = time.perf_counter()
    compiled = pipe.compile(image, poses, **call)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out, _ = pipe.run(image, poses, **call)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() if gpu else None
    measured = stats["peak_bytes_in_use"] / GIB if stats and "peak_bytes_in_use" in stats else None
    windows = len(window_starts(frames, size["window"], size["overlap"]))
    note = ("cuDNN attention" if attention else ("chunked attention" if memory_saving else "XLA attention"))
    if not gpu:
        note += "; device memory n/a on cpu"
    # no FLOP count: XLA's cost analysis counts a loop body once, not once per step and window
    return {"seconds": seconds, "compile_s": compile_s, "per_frame_s": seconds / out.shape[0],
            "flops": float("nan"), "measured_gib": measured, "predicted_gib": predicted_peak(compiled),
            "note": note, "setting": f"{frames} frames {height}x{width}, {windows} windows x {size['steps']} steps, "
                                     f"CFG, bf16 weights"}


# --------------------------------------------------------------------------------------- driver


def run_item(name: str, size: dict, state: dict) -> dict:
    if name == "matmul_peak":
        return matmul_peak(size)
    if name in ("window_jax_bf16", "window_jax_f32"):
        row = window_jax(size, "bfloat16" if name.endswith("bf16") else "float32")
        state.setdefault("flops", row["flops"])
        return row
    if name in ("window_torch_fp16", "window_torch_fp32"):
        return window_torch(size, "float16" if name.endswith("fp16") else "float32", state.get("flops"))
    raise KeyError(name)


def run_child(name: str, size_name: str, timeout: float) -> dict:
    """A video item in a fresh process (its own device memory peak); its row comes back as JSON."""
    cmd = [sys.executable, __file__, "--child", name, "--size", size_name]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s (budget)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"status": "error: " + " | ".join(tail)[-300:]}
    return json.loads(lines[-1][4:])


def fmt(value, spec: str) -> str:
    if value is None:
        return "n/a on cpu"
    if isinstance(value, float) and value != value:
        return "-"
    return format(value, spec)


def table(rows: dict, peak: float | None, platform: str) -> str:
    lines = ["| item | setting | status | compile (s) | time (s) | per output frame (s) | GFLOP | TFLOP/s | "
             "fraction of bf16 peak | peak memory measured (GiB) | peak memory predicted (GiB) | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, (label, _) in ITEMS.items():
        r = rows.get(name, {"status": "not run"})
        ok = r.get("status", "ok") == "ok"
        tf = r.get("tflops_s")
        cells = [label, r.get("setting", "-"), r.get("status", "ok")]
        if ok:
            frac = tf / peak if tf and peak and name != "matmul_peak" else None
            cells += [fmt(r.get("compile_s", float("nan")), ".1f"), fmt(r["seconds"], ".3f"),
                      fmt(r.get("per_frame_s", float("nan")), ".3f"),
                      fmt(r["flops"] / 1e9 if r.get("flops") else float("nan"), ".1f"),
                      fmt(tf if tf else float("nan"), ".2f"),
                      fmt(frac if frac else (1.0 if name == "matmul_peak" else float("nan")), ".3f"),
                      fmt(r.get("measured_gib", float("nan")), ".2f"), fmt(r.get("predicted_gib", float("nan")), ".2f"),
                      r.get("note", "")]
        else:
            cells += ["-"] * 8 + [r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return f"platform: {platform}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, help="folder for gpu_suite.md and gpu_suite.json")
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip items that would end after this")
    parser.add_argument("--only", nargs="*", choices=tuple(ITEMS), help="run these items only")
    parser.add_argument("--child", choices=("video_normal", "video_memory_saving"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = SIZES[args.size]

    if args.child:
        row = video(size, memory_saving=args.child == "video_memory_saving")
        print("ROW " + json.dumps(row), flush=True)
        return
    if args.results is None:
        parser.error("the results folder is required")

    import jax

    start = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    platform = f"{jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, size {args.size}"
    rows: dict = {}
    state: dict = {}
    # toy estimates: a tenth of the full-size ones (compilation dominates both)
    scale = 1.0 if args.size == "full" else 0.1
    for name, (label, estimate) in ITEMS.items():
        if args.only and name not in args.only:
            rows[name] = {"status": "not selected"}
            continue
        elapsed = time.perf_counter() - start
        if elapsed + estimate * scale > args.budget_s:
            rows[name] = {"status": f"skipped (budget: {elapsed:.0f} s used of {args.budget_s:.0f} s)"}
        else:
            print(f"[gpu_suite] {label} ...", file=sys.stderr, flush=True)
            try:
                if name.startswith("video_"):
                    row = run_child(name, args.size, args.budget_s - elapsed)
                else:
                    row = run_item(name, size, state)
                row.setdefault("status", "ok")
            except Exception as e:  # a failed item (e.g. out of memory) must not lose the others
                traceback.print_exc()
                row = {"status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            rows[name] = row
        peak = rows.get("matmul_peak", {}).get("tflops_s")
        text = table(rows, peak, platform)
        (args.results / "gpu_suite.md").write_text(text)
        (args.results / "gpu_suite.json").write_text(json.dumps({"platform": platform, "size": args.size,
                                                                 "rows": rows}, indent=2))
    print(text)
    print(f"[gpu_suite] {time.perf_counter() - start:.0f} s in all; written to {args.results}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package when not installed
    main()
