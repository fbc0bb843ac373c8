"""How much a trained UNet relies on the pose: its own training loss with the right, a wrong
and no pose.

A model that animates by the pose should denoise a clip much better with that clip's poses
than with another clip's or with none; one that only reconstructs from the reference image and
the noisy latents scores about the same either way. On clips cut as training cuts them
(`training.data`, pairs layout), with the conditioning dropout off and one draw of sigma,
noise and posterior sample per clip shared by all three rows, this computes the release's
diffusion loss (`training.loss.diffusion_loss`, unweighted) with the ControlNeXt module fed

- `own`: the clip's poses;
- `other`: the poses of the next clip in the batch (the batch rolled by one, so every clip
  gets a real pose sequence of another figure and motion);
- `blank`: all zero (no figure drawn).

and, as the bar the UNet has to clear, `copied`: the same weighted error of the reference's
latent (scaled, repeated over the frames) as the clean estimate, i.e. a model that copies the
reference and ignores noise and pose. It reports the means overall and per band of sigma (the layout of a frame is decided at high
noise, so that is where the pose should matter most). The control weight is the one animate
runs the checkpoint at (`checkpoint.store.trained_control_weight`). docs/embedded_model.md quotes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.checkpoint.store import load_component_config, read_pipeline, trained_control_weight
from controlnext_jax.errors import UserError
from controlnext_jax.models.controlnext_svd import encode_reference
from controlnext_jax.training.data import TrainingDataLoader
from controlnext_jax.training.data_sources import LATENT_FACTOR, DataConfig, check_data
from controlnext_jax.training.draws import draw
from controlnext_jax.training.loss import NOISE_AUG_STRENGTH, Models, diffusion_loss, loss_weight, target_latents

POSES = ("own", "other", "blank")
COPIED = "copied"
REPORT = "pose_use"


@dataclass(frozen=True)
class PoseUseSettings:
    clips: int = 24                  # clips scored, a multiple of batch_size
    batch_size: int = 4              # clips per batch (>= 2: `other` takes the next clip's poses)
    frames: int = 8                  # frames per clip, frame 0 the reference (as training cuts them)
    interval_frame: int = 2          # every n-th frame of the video
    height: int | None = None        # None: the checkpoint's inference_defaults
    width: int | None = None
    seed: int = 0                    # the clips drawn and the noise draws
    sigma_bands: tuple[float, ...] = (0.3, 2.0)  # band edges of the per-sigma rows


def _check(s: PoseUseSettings) -> None:
    for name, lo in (("clips", 1), ("batch_size", 2), ("frames", 2), ("interval_frame", 1), ("seed", 0)):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise UserError(f"{name}={value!r}: allowed: an integer >= {lo}")
    if s.clips % s.batch_size:
        raise UserError(f"clips={s.clips}: must be a multiple of batch_size={s.batch_size}")
    edges = list(s.sigma_bands)
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0 for e in edges) or edges != sorted(set(edges)):
        raise UserError(f"sigma_bands={edges}: allowed: increasing positive numbers")


def _size(ckpt: str | Path, s: PoseUseSettings) -> tuple[int, int]:
    defaults = read_pipeline(ckpt).get("inference_defaults") or {}
    height = s.height if s.height is not None else defaults.get("height")
    width = s.width if s.width is not None else defaults.get("width")
    if height is None or width is None:
        raise UserError(f"height={s.height}, width={s.width}: the checkpoint has no inference_defaults size; give both")
    return height, width  # check_data checks them (multiples of the VAE's factor)


def copied_losses(models: Models, frames: jax.Array, d, scaling_factor: float) -> jax.Array:
    """(b,) the training loss's weighted squared error with the clean estimate replaced by the
    reference's latent (the VAE mean of the noised reference, as the UNet receives it, times the
    scaling factor) in every frame: the same targets, draws and weights as `diffusion_loss`."""
    _, ref = encode_reference(models.image_encoder, models.vae, frames[:, 0], d.image_noise, NOISE_AUG_STRENGTH,
                              clip_dtype=jnp.float32, vae_dtype=jnp.float32)
    latents = target_latents(models.vae, frames, d.latent_eps, scaling_factor, jnp.float32)
    s = d.sigma.astype(jnp.float32)[:, None, None, None, None]
    err = loss_weight(s) * jnp.square(ref[:, None] * scaling_factor - latents)
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def per_clip_losses(ckpt: str | Path, data_root: str | Path, s: PoseUseSettings = PoseUseSettings()) -> dict:
    """{"sigma": (clips,), "own" / "other" / "blank" / "copied": (clips,)} float64 arrays."""
    from controlnext_jax.training.models import load_training_models

    _check(s)
    height, width = _size(ckpt, s)
    data = DataConfig(format="pairs", root=str(data_root), height=height, width=width, sample_n_frames=s.frames,
                      interval_frame=s.interval_frame, batch_size=s.batch_size, workers=0, seed=s.seed)
    check_data(data)  # the listing, before any weights load
    vae_config = load_component_config(ckpt, "vae")
    scale = trained_control_weight(ckpt)
    m = load_training_models(ckpt, "float32")
    # the weights enter the jitted function as arguments: closed over, XLA would fold them in as
    # constants and spend minutes compiling
    graphs, weights = zip(*(nnx.split(m[name]) for name in Models._fields))
    latent_hw = (height // LATENT_FACTOR, width // LATENT_FACTOR)

    @jax.jit
    def losses(weights, frames, poses, key):
        models = Models(*(nnx.merge(g, w) for g, w in zip(graphs, weights)))
        d = draw(key, batch=s.batch_size, frames=s.frames, height=height, width=width, latent_hw=latent_hw,
                 latent_channels=vae_config.latent_channels)
        d = d._replace(dropout_r=jnp.ones_like(d.dropout_r))  # r = 1 drops nothing
        variants = {"own": poses, "other": jnp.roll(poses, 1, axis=0), "blank": jnp.zeros_like(poses)}
        out = {}
        for name, p in variants.items():
            _, aux = diffusion_loss(models, {"frames": frames, "poses": p}, d,
                                    scaling_factor=float(vae_config.scaling_factor), dtype=jnp.float32,
                                    control_scale=scale)
            out[name] = aux["per_video"]
        out[COPIED] = copied_losses(models, frames, d, float(vae_config.scaling_factor))
        return out, d.sigma

    rows: dict[str, list] = {name: [] for name in ("sigma", *POSES, COPIED)}
    with TrainingDataLoader(data) as loader:
        for i in range(s.clips // s.batch_size):
            batch = next(loader)
            out, sigma = losses(weights, jnp.asarray(batch["frames"]), jnp.asarray(batch["poses"]),
                                jax.random.fold_in(jax.random.key(s.seed), i))
            rows["sigma"].append(np.asarray(sigma))
            for name in (*POSES, COPIED):
                rows[name].append(np.asarray(out[name]))
    return {name: np.concatenate(v).astype(np.float64) for name, v in rows.items()}


def summarise(losses: dict, sigma_bands=(0.3, 2.0)) -> list[dict]:
    """Rows {"band", "clips", "own", "other", "blank", "other_vs_own", "blank_vs_own"} (and "copied",
    "own_vs_copied" where `losses` has "copied"): all clips, then one per sigma band (empty bands left
    out); *_vs_own is the relative increase over own, own_vs_copied own's over copying the reference."""
    edges = [0.0, *sigma_bands, float("inf")]
    bands = [("all", np.ones_like(losses["sigma"], bool))]
    bands += [(f"sigma {lo:g}-{hi:g}" if np.isfinite(hi) else f"sigma >= {lo:g}",
               (losses["sigma"] >= lo) & (losses["sigma"] < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    rows = []
    for label, keep in bands:
        if not keep.any():
            continue
        names = [p for p in (*POSES, COPIED) if p in losses]
        row = {"band": label, "clips": int(keep.sum()), **{p: float(losses[p][keep].mean()) for p in names}}
        row["other_vs_own"] = row["other"] / row["own"] - 1.0
        row["blank_vs_own"] = row["blank"] / row["own"] - 1.0
        if COPIED in row:
            row["own_vs_copied"] = row["own"] / row[COPIED] - 1.0
        rows.append(row)
    return rows


def _markdown(rows: list[dict], header: dict) -> str:
    lines = [f"# How much the UNet uses the pose: {header['ckpt']}", "", f"`{header['command']}`", "",
             f"The release's diffusion loss (unweighted, no conditioning dropout) on {rows[0]['clips']} clips of "
             f"{header['data']}, one draw of sigma and noise per clip shared by the three pose inputs: the clip's own "
             "poses, the next clip's, none; and the reference's latent copied into every frame as the clean estimate (what "
             "a UNet that ignores noise and pose would score). The last three columns: how much worse a wrong or missing "
             "pose does, and own poses against copying (< 0: the UNet beats copying). "
             f"Control weight: {header['control_scale']:g} x 0.2 (the checkpoint's controlnext_cond_scale).",
             "", "| clips | n | own poses | another clip's | blank | reference copied | another's vs own | blank vs own "
             "| own vs copied |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['band']} | {r['clips']} | {r['own']:.4f} | {r['other']:.4f} | {r['blank']:.4f} | "
                     f"{r[COPIED]:.4f} | {100 * r['other_vs_own']:+.1f} % | {100 * r['blank_vs_own']:+.1f} % | "
                     f"{100 * r['own_vs_copied']:+.1f} % |")
    return "\n".join(lines) + "\n"


def pose_use_report(ckpt: str | Path, data_root: str | Path, out: str | Path, *,
                    settings: PoseUseSettings = PoseUseSettings(), command: str = "", overwrite: bool = False) -> Path:
    """Write <out>/pose_use.{md,json}; nothing on failure. Returns the folder."""
    out = check_output(out, inputs={"ckpt": ckpt, "dataset": data_root}, overwrite=overwrite)
    losses = per_clip_losses(ckpt, data_root, settings)
    rows = summarise(losses, settings.sigma_bands)
    header = {"ckpt": str(ckpt), "data": str(data_root), "command": command or "(library call)",
              "settings": asdict(settings), "control_scale": trained_control_weight(ckpt)}
    with atomic_folder(out, overwrite=overwrite) as tmp:
        (tmp / f"{REPORT}.json").write_text(json.dumps(
            {**header, "summary": rows, "clips": {k: v.tolist() for k, v in losses.items()}}, indent=1) + "\n")
        (tmp / f"{REPORT}.md").write_text(_markdown(rows, header))
    return out
