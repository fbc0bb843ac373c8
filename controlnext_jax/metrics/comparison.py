"""A trained checkpoint against its two baselines on one eval-layout data set, in one table.

`compare_baselines` runs `controlnext-eval` three times with the same data, alignment, metric
and generation settings (docs/embedded_model_eval.md):

- `trained`: `generate=true ckpt=<the checkpoint>`;
- `untrained`: `generate=true` on the same architecture with random weights
  (`baselines.write_untrained_checkpoint`);
- `reference_repeated`: the prepared reference image as every frame
  (`baselines.write_repeated_reference`, `dataset.generated_dir=`).

The pose metric compares the detector's poses on generated frames with the same detector's on
the ground-truth frames (`pose_metrics.target=ground_truth`), so its systematic errors on the
synthetic figures cancel; frames where it finds nobody on the ground truth are left out. The
detector's own accuracy on the ground truth against the renderer's poses
(ground_truth_poses.npz) is measured once (`detector_check`) and reported beside the table.
One detector instance serves everything and remembers each frame it has seen, so the ground
truth is detected once, not once per run.

The out folder: comparison.md, comparison.json, contact_sheet.png (the ground truth and each
method at the same moments), eval/<method>/ (each run's full report, the generated videos
included), untrained_checkpoint/ and reference_repeated_videos/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from controlnext_jax.atomic_io import atomic_folder, check_output
from controlnext_jax.checkpoint.store import checkpoint_digest
from controlnext_jax.cli import compose_config
from controlnext_jax.errors import require_int
from controlnext_jax.metrics import baselines, evaluation, pose_metrics
from controlnext_jax.metrics.contact_sheet import comparison_sheet
from controlnext_jax.metrics.dataset import Alignment, cover_crop, cover_crop_points, discover, read_ground_truth_poses
from controlnext_jax.metrics.evaluators import visible
from controlnext_jax.metrics.report import _json_safe
from controlnext_jax.pose.media import read_video
from controlnext_jax.provenance import code_version

METHODS = ("trained", "untrained", "reference_repeated")
SHEET = "contact_sheet.png"
# (results section, key, column title, higher is better)
COLUMNS = (
    ("frames", "psnr_figure", "PSNR figure (dB)", True),
    ("frames", "ssim_figure", "SSIM figure", True),
    ("frames", "l1_figure", "L1 figure", False),
    ("frames", "psnr", "PSNR frame (dB)", True),
    ("frames", "ssim", "SSIM frame", True),
    ("pose", "mean_oks", "OKS", True),
    ("pose", "PCK@0.1", "PCK@0.1", True),
    ("pose", "AKD_px", "AKD (px)", False),
    ("fvd", "fvd", "FVD", False),
)


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """The animate parameters every generated method shares (controlnext-eval's `generation.*`,
    `sampling.*`, `alignment.sample_stride`, `seed`: clip i is generated with seed + i)."""

    height: int = 128
    width: int = 96
    num_inference_steps: int = 25
    guidance_scale: float = 3.0
    batch_frames: int = 8
    overlap: int = 2
    sample_stride: int = 2
    max_frame_num: int = 25
    fps: int = 7
    seed: int = 0
    dtype: str = "float32"

    def overrides(self) -> list[str]:
        return [f"generation.height={self.height}", f"generation.width={self.width}",
                f"generation.num_inference_steps={self.num_inference_steps}",
                f"generation.guidance_scale={self.guidance_scale}", f"generation.max_frame_num={self.max_frame_num}",
                f"generation.fps={self.fps}", f"generation.dtype={self.dtype}",
                f"sampling.batch_frames={self.batch_frames}", f"sampling.overlap={self.overlap}",
                f"alignment.sample_stride={self.sample_stride}", f"seed={self.seed}"]


class CachedDetector:
    """A body detector that remembers its answer for every frame it has seen (by content)."""

    def __init__(self, detect):
        self.detect, self.cache, self.calls = detect, {}, 0

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frame = np.ascontiguousarray(frame)
        key = (frame.shape, hashlib.sha1(frame.tobytes()).hexdigest())
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.detect(frame)
        return self.cache[key]


def detector_check(detect, dataset: str | Path, settings: GenerationSettings, *, max_clips: int = 0,
                   score_threshold: float = 0.3) -> dict:
    """The detector on the ground-truth frames a generation is compared with (brought to the
    generated size as the evaluation does) against the renderer's poses: the share of frames
    where it finds the figure, and PCK@0.1 / mean OKS / AKD of what it finds. Clips without
    ground_truth_poses.npz count for the detection rate only."""
    alignment = Alignment(settings.sample_stride, True, 0, 0)
    per_clip, pred, pred_vis, pred_sc, target, target_vis = {}, [], [], [], [], []
    frames_total = found_total = 0
    for clip in discover(dataset, max_clips=max_clips):
        video = read_video(clip.ground_truth, "dataset.root")
        idx = alignment.source_indices(settings.max_frame_num, len(video))
        frames = cover_crop(video[idx], settings.height, settings.width)
        found = [detect(f) for f in frames]
        kp, sc = np.stack([k for k, _ in found]), np.stack([s for _, s in found])
        vis = visible(kp, sc, score_threshold)
        detected = vis.any(axis=1)
        frames_total, found_total = frames_total + len(frames), found_total + int(detected.sum())
        per_clip[clip.clip_id] = {"frames": len(frames), "detected": int(detected.sum())}
        if clip.ground_truth_poses is not None:
            truth = read_ground_truth_poses(clip.ground_truth_poses)
            tkp = cover_crop_points(truth.keypoints[idx], truth.size, settings.height, settings.width)
            pixels = np.array([settings.width, settings.height], np.float64)
            pred.append(kp * pixels), pred_vis.append(vis), pred_sc.append(sc)
            target.append(tkp * pixels), target_vis.append(visible(tkp, truth.scores[idx], score_threshold))
    out = {"frames": frames_total, "detected": found_total,
           "detection_rate": found_total / frames_total if frames_total else float("nan"),
           "size": f"{settings.height}x{settings.width}", "per_clip": per_clip}
    if pred:
        summary, _ = pose_metrics.pose_accuracy(np.concatenate(pred), np.concatenate(pred_vis),
                                                np.concatenate(pred_sc), np.concatenate(target),
                                                np.concatenate(target_vis))
        out["vs_renderer"] = {k: summary[k] for k in ("PCK@0.1", "mean_oks", "AKD_px", "MKR")}
    return out


def _value(report: dict, section: str, key: str):
    value = report["results"].get(section, {}).get(key)
    if isinstance(value, str):  # report.json writes nan / inf as strings
        return float(value)
    return value


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _detection_rates(report: dict) -> dict:
    pose = report["results"].get("pose")
    if not pose:
        return {}
    gt = pose["frames_with_target"] / pose["frames"] if pose["frames"] else float("nan")
    return {"ground_truth_frames_with_figure": gt}


def compare_baselines(ckpt: str | Path, dataset: str | Path, out: str | Path, *,
                      settings: GenerationSettings = GenerationSettings(), untrained_seed: int = 1,
                      untrained_components: Sequence[str] = baselines.ALL_COMPONENTS, fvd: bool = False,
                      pose: bool = True, max_clips: int = 0, eval_overrides: Sequence[str] = (),
                      command: str = "", overwrite: bool = False, progress: bool = False,
                      sheet_clips: int = 3, sheet_frames: int = 6) -> Path:
    """Evaluate `ckpt`, its untrained twin and the repeated reference on the eval-layout
    `dataset`; writes the folder `out` (all or nothing) and returns it. `eval_overrides` are
    extra controlnext-eval parameters given to all three runs (e.g. the pose detector's).
    contact_sheet.png shows the first `sheet_clips` clips at `sheet_frames` moments (0: none)."""
    max_clips = require_int("max_clips", max_clips, 0)
    sheet_clips = require_int("sheet.clips", sheet_clips, 0)
    sheet_frames = require_int("sheet.frames", sheet_frames, 1)
    code = code_version()  # before JAX starts threads (git runs in a subprocess)
    out = check_output(out, inputs={"ckpt": ckpt, "dataset": dataset}, overwrite=overwrite)
    common = [f"dataset.root={Path(dataset).absolute()}", f"dataset.max_clips={max_clips}",
              f"progress={str(progress).lower()}", f"fvd.enabled={str(fvd).lower()}",
              f"pose_metrics.enabled={str(pose).lower()}", "pose_metrics.target=ground_truth",
              *settings.overrides(), *eval_overrides]
    with atomic_folder(out, overwrite=overwrite) as tmp:
        untrained = baselines.write_untrained_checkpoint(ckpt, tmp / "untrained_checkpoint", seed=untrained_seed,
                                                         components=untrained_components)
        repeated = baselines.write_repeated_reference(dataset, tmp / "reference_repeated_videos",
                                                      height=settings.height, width=settings.width,
                                                      max_frame_num=settings.max_frame_num,
                                                      sample_stride=settings.sample_stride, fps=settings.fps,
                                                      max_clips=max_clips)
        runs = {"trained": ["generate=true", f"ckpt={Path(ckpt).absolute()}"],
                "untrained": ["generate=true", f"ckpt={untrained}"],
                "reference_repeated": ["generate=false", f"dataset.generated_dir={repeated}"]}
        pose_tools, detector, check = None, None, None
        if pose:
            base_cfg = compose_config("eval", [*common, f"out={tmp / 'unused'}"])
            alignment = Alignment(settings.sample_stride, True, 0, 0)
            try:
                detect, driving = evaluation.pose_tools_from_package(base_cfg, alignment)
            except ImportError:
                pass  # each run records the pose metric as skipped, with the reason
            else:
                detector = CachedDetector(detect)
                pose_tools = (detector, driving)
                check = detector_check(detector, dataset, settings, max_clips=max_clips,
                                       score_threshold=base_cfg.pose_metrics.score_threshold)
        reports, eval_commands = {}, {}
        (tmp / "eval").mkdir()
        for method in METHODS:
            overrides = [*common, *runs[method], f"out={tmp / 'eval' / method}"]
            cfg = compose_config("eval", overrides)
            # recorded with the final paths (the runs write into the temporary folder that becomes `out`)
            eval_commands[method] = " ".join(["controlnext-eval", *overrides]).replace(str(tmp), str(out))
            evaluation.run(cfg, pose_tools=pose_tools, command=eval_commands[method])
            reports[method] = json.loads((tmp / "eval" / method / "report.json").read_text())
        if sheet_clips:
            videos = {"trained": tmp / "eval" / "trained" / "generated",
                      "untrained": tmp / "eval" / "untrained" / "generated", "reference_repeated": repeated}
            sheet = comparison_sheet(dataset, videos, Alignment(settings.sample_stride, True, 0, 0),
                                     clips=min(sheet_clips, max_clips or sheet_clips), frames=sheet_frames)
            iio.imwrite(tmp / SHEET, sheet)
        header = {
            "command": command or "(library call)",
            "code": code,
            "checkpoint": f"{Path(ckpt).absolute()} (digest {checkpoint_digest(ckpt)})",
            "untrained checkpoint": (f"architecture of the checkpoint, random {', '.join(untrained_components)} "
                                     f"with seed {untrained_seed} (digest {checkpoint_digest(untrained)})"),
            "generation seed": f"{settings.seed} (clip i generated with seed {settings.seed} + i, both models)",
            "dataset": str(Path(dataset).absolute()),
            "settings": dataclasses.asdict(settings),
            "eval commands": eval_commands,
        }
        _write(tmp, header, reports, check)
    return out


def _write(folder: Path, header: dict, reports: dict, check: dict | None) -> None:
    columns = [c for c in COLUMNS if any(_value(r, c[0], c[1]) is not None for r in reports.values())]
    table = {m: {key: _value(r, section, key) for section, key, _, _ in columns} for m, r in reports.items()}
    for method, report in reports.items():
        table[method].update(_detection_rates(report))
    margins = {}  # trained minus each baseline, signed so that > 0 means the trained model is better
    for base in ("untrained", "reference_repeated"):
        margins[base] = {key: (None if table["trained"][key] is None or table[base][key] is None else
                               (table["trained"][key] - table[base][key]) * (1 if higher else -1))
                         for _, key, _, higher in columns}
    clips = next(iter(reports.values()))["details"]["clips"]
    frames = sum(v["aligned"] for v in clips.values())
    payload = {"header": header, "results": table, "margin_over": margins, "detector_check": check,
               "clips": len(clips), "frames_compared": frames,
               "reports": {m: f"eval/{m}/report.json" for m in reports}}
    (folder / "comparison.json").write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    lines = ["# Trained model against its baselines", "",
             f"{len(clips)} clips, {frames} compared frames (docs/embedded_model_eval.md).", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items() if k not in ("eval commands", "settings")]
    lines += [f"- **settings**: {', '.join(f'{k}={v}' for k, v in header['settings'].items())}", ""]
    titles = [title + (" ↑" if higher else " ↓") for _, _, title, higher in columns]
    lines += ["| method | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for method in reports:
        lines.append(f"| {method} | " + " | ".join(_fmt(table[method][k]) for _, k, _, _ in columns) + " |")
    for base, values in margins.items():
        lines.append(f"| margin over {base} | " + " | ".join(_fmt(values[k]) for _, k, _, _ in columns) + " |")
    lines += ["", "Margins: trained minus baseline, sign flipped for lower-is-better metrics (> 0: trained better). "
                  "Pose: the detector on generated frames against the same detector on the ground truth, over frames "
                  "where it finds the figure on the ground truth."]
    if check is not None:
        lines += ["", "## Detector on the ground truth", "",
                  f"Found the figure in {check['detected']} of {check['frames']} ground-truth frames at "
                  f"{check['size']} (detection rate {_fmt(check['detection_rate'])})."]
        if "vs_renderer" in check:
            lines.append("Against the renderer's poses: " + ", ".join(f"{k} {_fmt(v)}"
                                                                     for k, v in check["vs_renderer"].items()) + ".")
    if (folder / SHEET).is_file():
        lines += ["", f"`{SHEET}`: per clip, a row of the ground truth (the reference image first), then one "
                      f"row per method in the order {', '.join(METHODS)}, at the same evenly spaced moments."]
    lines += ["", "## Runs", ""] + [f"- {m}: `{c}` (eval/{m}/report.md)" for m, c in header["eval commands"].items()]
    (folder / "comparison.md").write_text("\n".join(lines) + "\n")


__all__ = ["METHODS", "CachedDetector", "GenerationSettings", "compare_baselines", "detector_check"]
