"""The report: provenance header, results, skipped metrics, written atomically.

`report.json` holds everything (header, results, per-clip details); `report.md` is the
human-readable view of the same numbers. Output goes to a temporary folder beside the
target and is renamed into place only when complete, so a failed run leaves nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Skipped:
    metric: str
    reason: str


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan / inf
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        return _json_safe(value.item())
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


METRIC_NOTES = {
    "fvd": ("FVD (google-research definition): I3D Kinetics-400 logits averaged over time, frames "
            "resized with TF1 resize_bilinear to 224x224 in [-1, 1], Frechet distance in float64 "
            "(unbiased covariances). FVD depends strongly on the clip count: compare values only at equal "
            "counts and sampling; with fewer clips than 400 the covariances are rank-deficient and FVD is "
            "biased upwards."),
    "frames": ("Frame metrics over every aligned frame (frames pooled over clips): PSNR in dB with peak 255; "
               "SSIM with scikit-image semantics (7x7 uniform window unless Gaussian weights are set, sample "
               "covariance, K1 0.01, K2 0.03, channels averaged); L1 = mean |generated - ground truth| on the "
               "[0, 1] scale, computed in float (not the uint8 subtraction that wraps around, as some "
               "published code did). psnr_figure / ssim_figure / l1_figure (clips with figure_mask.npz): the "
               "same over the person alone: PSNR from the MSE over the mask's pixels, SSIM as the mean of the "
               "SSIM map over them, the mask brought to the generated size like the ground truth (bilinear "
               "cover + centre crop, thresholded at half)."),
    "fid": ("FID over frames: every aligned generated frame against every ground-truth frame (pooled over "
            "clips), features from the user's TorchScript extractor (header: fid_extractor), Frechet distance in "
            "float64. Like FVD it depends on the sample count."),
    "lpips": ("LPIPS v0.1 per aligned frame pair (frames in [-1, 1]; backbone and linear heads from the files "
              "in the header), mean over all frames."),
    "pose": ("Pose accuracy of the 18 OpenPose body keypoints detected on generated frames against the target "
             "poses; a keypoint is visible if its score > threshold. OKS with COCO sigmas (neck: shoulder "
             "sigma 0.079) and the target's keypoint-box area; AP = COCO AP over OKS 0.50:0.05:0.95; PCK@a: "
             "within a * max(box w, h) of the target; AKD: mean pixel distance over keypoints found in both; "
             "MKR: share of target keypoints missing from the generated frame."),
    "seams": ("Window seams: d_i = mean |frame i+1 - frame i| on [0, 1]; a boundary transition is one where "
              "the set of sampler windows averaged into the frame changes. seam_ratio = mean d at boundaries / "
              "mean d elsewhere (1 = no visible seam); seam_local_ratio divides each boundary by the median of "
              "nearby interior transitions; seam_ratio_ground_truth is the same statistic at the same positions "
              "of the ground truth (natural baseline)."),
}


def _per_clip_table(rows: dict[str, dict]) -> list[str]:
    """One row per clip, one column per value (the union of the clips' keys, in order)."""
    columns = list(dict.fromkeys(k for values in rows.values() for k in values))
    lines = ["| clip | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for clip, values in rows.items():
        lines.append(f"| {clip} | " + " | ".join(_fmt(values.get(k, "")) for k in columns) + " |")
    return lines


PER_CLIP_NOTES = {
    "fvd": "each clip's own I3D clips; nan where a side has fewer than 2",
    "fid": "each clip's own frames; nan with fewer than 2, and strongly biased with few frames",
    "pose": "each clip's frames alone",
    "seams": "each clip's transitions alone",
}


def write_report(folder: Path, header: dict, results: dict[str, dict], skipped: list[Skipped],
                 details: dict, plots: dict[str, str], per_clip: dict[str, dict[str, dict]] | None = None) -> None:
    """report.json and report.md into `folder`. `per_clip` holds, per metric, each clip's values."""
    per_clip = per_clip or {}
    payload = {"header": header, "results": results, "per_clip": per_clip,
               "skipped": [{"metric": s.metric, "reason": s.reason} for s in skipped],
               "plots": plots, "details": details}
    (folder / "report.json").write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")

    lines = ["# ControlNeXt-SVD evaluation report", "", "## Reproducibility", ""]
    for key, value in header.items():
        if key != "config_yaml":
            lines.append(f"- **{key}**: {_fmt(value)}")
    for name, values in results.items():
        lines += ["", f"## {name}", "", METRIC_NOTES.get(name, ""), "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in values.items()]
        if name == "fvd" and "fvd" in values:
            lines += ["", f"**FVD = {values['fvd']:.2f}** ({details['fvd']['clips_generated']} generated vs "
                          f"{details['fvd']['clips_real']} real clips; {details['fvd']['sampling']})"]
        if per_clip.get(name):
            lines += ["", f"Per clip ({PER_CLIP_NOTES[name]}):" if name in PER_CLIP_NOTES else "Per clip:", ""]
            lines += _per_clip_table(per_clip[name])
        if name in plots:
            lines += ["", f"![{name}]({plots[name]})"]
    if skipped:
        lines += ["", "## Not computed", ""]
        lines += [f"- **{s.metric}**: {s.reason}" for s in skipped]
    if "speed" in details:
        lines += ["", "## Speed", "", "| metric | seconds | aligned frames per second |", "|---|---|---|"]
        lines += [f"| {name} | {v['seconds']:.2f} | {_fmt(v['frames_per_second'])} |"
                  for name, v in details["speed"].items()]
    lines += ["", "## Full config", "", "```yaml", header.get("config_yaml", "").rstrip(), "```", ""]
    (folder / "report.md").write_text("\n".join(lines))
