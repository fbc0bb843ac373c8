"""How well a checkpoint's VAE reconstructs held-out footage, against what a VAE must beat.

Each clip's frames `start, start+1, ...` (`frames` of them) are brought to the evaluation size
as the pipeline brings a reference image (`prepare_reference`), encoded to the posterior mean
(what the pipeline conditions on) and decoded together by the temporal decoder, as one chunk of
`decode_latents` (the pipeline's own decoder call and uint8 post-processing). The
reconstruction is scored against the input frames with the frame metrics the evaluation uses
(`frame_metrics`: PSNR, SSIM, L1 on [0, 1]) and one more that a grey-looking VAE fails first:

- mean-colour error: |frame mean colour of the reconstruction - of the input|, per channel, on
  [0, 1]. Flat regions decoded at the wrong colour show here before anywhere else
  (docs/embedded_model.md, The VAE stage).

Two baselines get the same scores, so the numbers read on their own:

- `mean_colour`: every pixel replaced by its frame's mean colour (what a VAE that learnt
  nothing but the average scores);
- `downsampled`: area-averaged by the VAE's spatial factor, then bilinear back up: the
  information a latent grid of that resolution holds if it kept colour only. A VAE with 4
  latent channels per cell should beat it.

It also reports the RMS of the scaled latents (posterior mean times the
checkpoint's `scaling_factor`): the diffusion stage assumes about 1.

**Over the figure.** When the clips come from `controlnext-synth` (a `masks/` folder beside
`videos/` holds each clip's figure masks), PSNR is also taken over the figure alone, on every
frame after the first, for the VAE round trip and for the first frame repeated: the baseline a
generated video is compared with (`eval/compare_baselines.py`). A generated video is decoded by
the same VAE, and the encoder's latents of the true frames are about the best its decoder gets,
so the round trip is roughly the most a model on this VAE scores there, and the gap between the
two is the room a UNet has to beat that baseline (docs/embedded_model.md). The true frames
downsampled by the VAE's factor and back up are scored there too: when even they barely beat the
repeated frame, the frame size (how many latent cells a figure covers), not the VAE's training,
is what leaves no room.
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
from controlnext_jax.checkpoint.store import load_component, load_component_config
from controlnext_jax.errors import UserError
from controlnext_jax.metrics.contact_sheet import frame_grid
from controlnext_jax.metrics.frame_metrics import l1, psnr, psnr_masked, ssim
from controlnext_jax.pipeline.pipeline import vae_scale_factor
from controlnext_jax.pipeline.program import decode_latents
from controlnext_jax.pose.media import probe_video, sampled_frames
from controlnext_jax.pose.video import prepare_reference

METHODS = ("vae", "mean_colour", "downsampled")
REPORT = "vae_reconstruction"


@dataclass(frozen=True)
class ReconstructionSettings:
    frames: int = 8          # frames decoded together (one temporal-decoder chunk)
    start: int = 0           # first frame of every clip
    stride: int = 1          # frames start, start + stride, ... (the evaluation's sample_stride)
    height: int | None = None  # None: each clip's own size
    width: int | None = None
    max_clips: int = 0       # the first N clips by name; 0 = all
    sheet_clips: int = 4     # clips shown in contact_sheet.png
    sheet_frames: int = 4    # frames of each shown

    @property
    def last_frame(self) -> int:
        """Index of the last frame read: start + (frames - 1) * stride."""
        return self.start + (self.frames - 1) * self.stride


def _check_settings(s: ReconstructionSettings, factor: int) -> None:
    for name in ("frames", "stride", "sheet_frames"):
        if not isinstance(getattr(s, name), int) or getattr(s, name) < 1:
            raise UserError(f"{name}={getattr(s, name)!r}: allowed: an integer >= 1")
    for name in ("start", "max_clips", "sheet_clips"):
        if not isinstance(getattr(s, name), int) or getattr(s, name) < 0:
            raise UserError(f"{name}={getattr(s, name)!r}: allowed: an integer >= 0")
    if (s.height is None) != (s.width is None):
        raise UserError(f"height={s.height}, width={s.width}: give both or neither")
    for name in ("height", "width"):
        value = getattr(s, name)
        if value is not None and (not isinstance(value, int) or value < factor or value % factor):
            raise UserError(f"{name}={value!r}: allowed: a positive multiple of {factor} (the VAE's factor)")


def list_clips(videos: str | Path, max_clips: int = 0) -> list[Path]:
    """The .mp4 files directly in `videos`, sorted by name (the first `max_clips` if > 0)."""
    folder = Path(videos)
    if not folder.is_dir():
        raise UserError(f"videos={videos}: not a folder (give a folder of .mp4 clips, e.g. data/synth_heldout/videos)")
    clips = sorted(folder.glob("*.mp4"))
    if not clips:
        raise UserError(f"videos={videos}: holds no .mp4 files")
    return clips[:max_clips] if max_clips else clips


def read_clip(path: Path, s: ReconstructionSettings, factor: int) -> np.ndarray:
    """(frames, H, W, 3) uint8: frames start.. of the clip at the evaluation size."""
    info = probe_video(path, param="videos")
    height, width = (s.height, s.width) if s.height is not None else (info.height, info.width)
    if height % factor or width % factor:
        raise UserError(f"videos={path.parent}: {path.name} is {info.height}x{info.width}, not a multiple of the "
                        f"VAE's factor {factor}; pass height= and width=")
    frames = list(sampled_frames(path, s.stride, s.frames, param="videos", info=info, start=s.start))
    if len(frames) < s.frames:
        raise UserError(f"videos={path.parent}: {path.name} has fewer than {s.last_frame + 1} frames, which start={s.start} "
                        f"frames={s.frames} stride={s.stride} need")
    return np.stack([prepare_reference(f, height, width) for f in frames])


def figure_masks(clips: list[Path], frames: list[np.ndarray], s: ReconstructionSettings) -> list[np.ndarray] | None:
    """Each clip's figure masks at the frames read (`masks/<clip>.npz` beside the videos folder,
    as `controlnext-synth` writes them), or None when there is no such folder, the frames are
    resized (the masks are at the clips' own size) or there is no frame after the first to
    score. Checked against the frames before any weights load."""
    folder = clips[0].parent.parent / "masks"
    if not folder.is_dir() or s.height is not None or s.frames < 2:
        return None
    masks = []
    for clip, clip_frames in zip(clips, frames):
        path = folder / f"{clip.stem}.npz"
        if not path.is_file():
            raise UserError(f"videos={clip.parent}: {clip.name} has no figure masks {path} (the masks folder "
                            "beside the videos must cover every clip)")
        with np.load(path, allow_pickle=False) as data:
            if "masks" not in data:
                raise UserError(f"{path}: holds no 'masks' array")
            stack = data["masks"]
        picked = stack[s.start:s.last_frame + 1:s.stride] if stack.ndim == 3 else stack
        if picked.shape != clip_frames.shape[:3]:
            raise UserError(f"{path}: masks of shape {stack.shape}; frames start={s.start} stride={s.stride} "
                            f"frames={s.frames} of {clip.name} need ({s.last_frame + 1}, "
                            f"{clip_frames.shape[1]}, {clip_frames.shape[2]})")
        masks.append(picked.astype(bool))
    return masks


def figure_scores(recon: np.ndarray, clip: np.ndarray, masks: np.ndarray, downsampled: np.ndarray) -> dict:
    """PSNR over the figure on frames 1.. of the clip: the VAE round trip, frame 0 repeated, and
    `downsampled`, the clip through `downsampled_baseline` (what the latent grid's resolution alone
    leaves of the figure). Frames whose mask is empty are left out."""
    repeated = np.broadcast_to(clip[:1], clip[1:].shape)
    return {"vae": float(np.nanmean(psnr_masked(recon[1:], clip[1:], masks[1:]))),
            "first_frame_repeated": float(np.nanmean(psnr_masked(repeated, clip[1:], masks[1:]))),
            "downsampled": float(np.nanmean(psnr_masked(downsampled[1:], clip[1:], masks[1:])))}


def mean_colour_baseline(frames: np.ndarray) -> np.ndarray:
    """Every pixel replaced by its frame's mean colour (uint8, rounded)."""
    mean = frames.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    return np.broadcast_to(np.round(mean), frames.shape).astype(np.uint8)


def downsampled_baseline(frames: np.ndarray, factor: int) -> np.ndarray:
    """Area-average `factor` x `factor` blocks, then bilinear (half-pixel centres) back up."""
    t, h, w, c = frames.shape
    small = frames.astype(np.float32).reshape(t, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
    up = jax.image.resize(jnp.asarray(small), (t, h, w, c), method="linear", antialias=False)
    return np.asarray(jnp.clip(jnp.round(up), 0, 255)).astype(np.uint8)


def mean_colour_error(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(t,) mean over channels of |frame mean colour difference|, on [0, 1]."""
    g = generated.astype(np.float64).mean(axis=(1, 2))
    r = reference.astype(np.float64).mean(axis=(1, 2))
    return np.abs(g - r).mean(axis=-1) / 255.0


def scores(generated: np.ndarray, reference: np.ndarray) -> dict:
    return {"psnr": float(np.mean(psnr(generated, reference))), "ssim": float(np.mean(ssim(generated, reference))),
            "l1": float(np.mean(l1(generated, reference))),
            "mean_colour_error": float(np.mean(mean_colour_error(generated, reference)))}


class VaeRoundTrip:
    """The checkpoint's VAE in float32: uint8 frames -> (reconstruction uint8, scaled latents)."""

    def __init__(self, ckpt: str | Path):
        vae = load_component(ckpt, "vae", param_dtype=jnp.float32)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.factor = vae_scale_factor(vae.config)
        graphdef, state = nnx.split(vae)
        self._state = state

        def round_trip(state, frames_u8):
            vae = nnx.merge(graphdef, state)
            x = frames_u8.astype(jnp.float32) / 127.5 - 1.0
            latents = vae.encode_mode(x) * self.scaling_factor
            return decode_latents(vae, latents, x.shape[0], self.scaling_factor), latents

        self._round_trip = jax.jit(round_trip)

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        recon, latents = self._round_trip(self._state, jnp.asarray(frames))
        return np.asarray(recon), np.asarray(latents)


def evaluate_vae(ckpt: str | Path, videos: str | Path, settings: ReconstructionSettings = ReconstructionSettings()):
    """Per-clip scores of the VAE and the baselines, the scaled latents' RMS, and the sheet's frames."""
    factor = vae_scale_factor(load_component_config(ckpt, "vae"))
    _check_settings(settings, factor)
    clips = list_clips(videos, settings.max_clips)
    frames = [read_clip(path, settings, factor) for path in clips]  # every input checked before the weights load
    masks = figure_masks(clips, frames, settings)
    model = VaeRoundTrip(ckpt)
    per_clip, sheet, latent_sq, latent_n = [], [], 0.0, 0
    for i, (path, clip) in enumerate(zip(clips, frames)):
        recon, latents = model(clip)
        latent_sq += float(np.sum(np.square(latents.astype(np.float64))))
        latent_n += latents.size
        downsampled = downsampled_baseline(clip, model.factor)
        per_clip.append({"clip": path.stem, "vae": scores(recon, clip),
                         "mean_colour": scores(mean_colour_baseline(clip), clip),
                         "downsampled": scores(downsampled, clip)})
        if masks is not None:
            per_clip[-1]["figure_psnr"] = figure_scores(recon, clip, masks[i], downsampled)
        if len(sheet) < settings.sheet_clips:
            sheet.append((clip[:settings.sheet_frames], recon[:settings.sheet_frames]))
    mean = {m: {k: float(np.mean([c[m][k] for c in per_clip])) for k in per_clip[0][m]} for m in METHODS}
    figure = (None if masks is None else
              {k: float(np.nanmean([c["figure_psnr"][k] for c in per_clip])) for k in per_clip[0]["figure_psnr"]})
    return {"clips": per_clip, "mean": mean, "figure_psnr": figure,
            "scaled_latent_rms": float(np.sqrt(latent_sq / latent_n)), "scaling_factor": model.scaling_factor, "vae_factor": model.factor}, sheet


def contact_sheet(sheet: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per clip two rows: the input frames above their reconstructions."""
    return frame_grid([row for clip, recon in sheet for row in (list(clip), list(recon))])


def _markdown(result: dict, header: dict) -> str:
    names = {"vae": "the VAE (posterior mean, decoded)", "mean_colour": "baseline: frame mean colour",
             "downsampled": f"baseline: {result['vae_factor']}x area-downsampled, bilinear up"}
    lines = [f"# VAE reconstruction: {header['ckpt']}", "", f"`{header['command']}`", "",
             f"{len(result['clips'])} clips of {header['videos']}, frames {_frames(header['settings'])} decoded "
             "together. PSNR in dB (peak 255); L1 and mean-colour error on [0, 1].", "",
             "| reconstruction | PSNR | SSIM | L1 | mean-colour error |", "|---|---:|---:|---:|---:|"]
    for m in METHODS:
        s = result["mean"][m]
        lines.append(f"| {names[m]} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['l1']:.4f} | "
                     f"{s['mean_colour_error']:.4f} |")
    if result["figure_psnr"] is not None:
        f = result["figure_psnr"]
        lines += ["", "Over the figure (the renderer's masks beside the videos), every frame after the first:", "",
                  "| frames after the first | PSNR over the figure |", "|---|---:|",
                  f"| the VAE's round trip (roughly the most a video decoded by this VAE scores here) | {f['vae']:.2f} |",
                  f"| the first frame repeated (the baseline a generated video must beat) | "
                  f"{f['first_frame_repeated']:.2f} |",
                  f"| the true frames {result['vae_factor']}x area-downsampled, bilinear up (the latent grid's "
                  f"resolution alone) | {f['downsampled']:.2f} |"]
    lines += ["", f"Scaled latents (posterior mean x scaling_factor {result['scaling_factor']:.4f}): "
              f"RMS {result['scaled_latent_rms']:.3f} (the diffusion stage assumes about 1).", "",
              "| clip | PSNR | SSIM | L1 | mean-colour error |", "|---|---:|---:|---:|---:|"]
    for c in result["clips"]:
        s = c["vae"]
        lines.append(f"| {c['clip']} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['l1']:.4f} | "
                     f"{s['mean_colour_error']:.4f} |")
    return "\n".join(lines) + "\n"


def _frames(settings: dict) -> str:
    s = ReconstructionSettings(**settings)
    return f"{s.start}-{s.last_frame}" if s.stride == 1 else f"{s.start}, {s.start + s.stride}, ..., {s.last_frame}"


def vae_reconstruction_report(ckpt: str | Path, videos: str | Path, out: str | Path, *,
                              settings: ReconstructionSettings = ReconstructionSettings(), command: str = "",
                              overwrite: bool = False) -> Path:
    """Write <out>/vae_reconstruction.{md,json} and <out>/contact_sheet.png; nothing on failure."""
    import imageio.v3 as iio

    out = check_output(out, inputs={"ckpt": ckpt, "videos": videos}, overwrite=overwrite)
    result, sheet = evaluate_vae(ckpt, videos, settings)
    header = {"ckpt": str(ckpt), "videos": str(videos), "command": command, "settings": asdict(settings)}
    with atomic_folder(out, overwrite=overwrite) as tmp:
        (tmp / f"{REPORT}.json").write_text(json.dumps({**header, **result}, indent=1) + "\n")
        (tmp / f"{REPORT}.md").write_text(_markdown(result, header))
        iio.imwrite(tmp / "contact_sheet.png", contact_sheet(sheet))
    return out
