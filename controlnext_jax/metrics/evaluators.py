"""Evaluators: each takes aligned clips one by one (`update`) and then yields its pooled
`(name, value)` results, the same values per clip (`per_clip`) and its details for
report.json; the metric maths lives in the small pure modules beside this one.

`update(clip, progress)` calls `progress(n)` as it gets through n more of the clip's
aligned frames (the job's progress bars).

An evaluator that cannot run (no weights, no pose detector) is not built; the job records
why instead (`report.Skipped`), so a missing number is never replaced by a made-up one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.metrics import frame_metrics, pose_metrics, seams
from controlnext_jax.metrics.dataset import AlignedClip
from controlnext_jax.metrics.fid import FrameFeatures
from controlnext_jax.metrics.frechet import frechet_distance_from_features
from controlnext_jax.metrics.fvd import ClipSampling, I3DEmbedder, fvd_from_embeddings
from controlnext_jax.metrics.lpips import LPIPSMetric
from controlnext_jax.pose.types import VISIBLE_SCORE
from controlnext_jax.sampling.windows import window_starts

# A body-pose detector: uint8 (h, w, 3) frame -> (keypoints (18, 2) normalised x/W, y/H; scores (18,)).
BodyDetector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Progress = Callable[[int], object]
MIN_DISTANCE_SAMPLES = 2  # a Frechet distance needs two samples per side


def _no_progress(n: int) -> None:
    pass


def _frechet_or_nan(distance, a: list, b: list) -> float:
    if min(len(a), len(b)) < MIN_DISTANCE_SAMPLES:
        return float("nan")
    return distance(np.stack(a), np.stack(b))


@dataclass
class FVDEvaluator:
    """FVD between the same clips of the generated and the ground-truth videos.

    Clips of both sides queue up across videos and go to the I3D in full batches (a video
    often gives a single clip; embedding per video would pad every batch). Per clip, FVD
    needs at least two I3D clips on each side (`fvd.max_clips_per_video=0` takes all)."""

    embedder: I3DEmbedder
    sampling: ClipSampling
    generated: list[np.ndarray] = field(default_factory=list)
    real: list[np.ndarray] = field(default_factory=list)
    generated_ids: list[str] = field(default_factory=list)
    real_ids: list[str] = field(default_factory=list)
    _queue: list[tuple[bool, str, np.ndarray]] = field(default_factory=list, repr=False)  # (is_generated, id, clip)
    name: str = "fvd"

    def _flush(self, everything: bool) -> None:
        size = self.embedder.batch_size
        while len(self._queue) >= size or (everything and self._queue):
            batch, self._queue = self._queue[:size], self._queue[size:]
            for (is_generated, clip_id, _), embedding in zip(batch, self.embedder([c for _, _, c in batch])):
                (self.generated if is_generated else self.real).append(embedding)
                (self.generated_ids if is_generated else self.real_ids).append(clip_id)

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        # same clips of the generated and the ground-truth videos, at the same frame rate
        clips = [(True, clip.clip_id, c) for c in self.sampling.clips(clip.generated_aligned)]
        clips += [(False, clip.clip_id, c) for c in self.sampling.clips(clip.ground_truth)]
        if clips and self._queue and self._queue[0][2].shape != clips[0][2].shape:
            self._flush(everything=True)  # a batch holds one clip shape
        self._queue.extend((side, cid, np.ascontiguousarray(c)) for side, cid, c in clips)  # copies: the video can go
        self._flush(everything=False)
        progress(len(clip.generated_aligned))

    def results(self) -> Iterator[tuple[str, float]]:
        self._flush(everything=True)
        yield "fvd_clips_generated", len(self.generated)
        yield "fvd_clips_real", len(self.real)
        if min(len(self.generated), len(self.real)) >= MIN_DISTANCE_SAMPLES:
            yield "fvd", fvd_from_embeddings(np.stack(self.generated), np.stack(self.real))

    def per_clip(self) -> dict[str, dict]:
        self._flush(everything=True)
        out = {}
        for clip_id in dict.fromkeys(self.generated_ids + self.real_ids):
            gen = [e for e, c in zip(self.generated, self.generated_ids) if c == clip_id]
            real = [e for e, c in zip(self.real, self.real_ids) if c == clip_id]
            out[clip_id] = {"fvd": _frechet_or_nan(fvd_from_embeddings, gen, real),
                            "fvd_clips_generated": len(gen), "fvd_clips_real": len(real)}
        return out

    def details(self) -> dict:
        return {"sampling": self.sampling.describe(), "clip_length": self.sampling.clip_length,
                "frame_stride": self.sampling.frame_stride, "max_clips_per_video": self.sampling.max_clips,
                "clips_generated": len(self.generated), "clips_real": len(self.real)}


@dataclass
class FIDEvaluator:
    """FID between all aligned generated frames and all ground-truth frames (pooled over clips)."""

    features: FrameFeatures
    generated: dict[str, np.ndarray] = field(default_factory=dict)
    real: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "fid"

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        self.generated[clip.clip_id] = self.features(clip.generated_aligned)
        self.real[clip.clip_id] = self.features(clip.ground_truth)
        progress(len(clip.generated_aligned))

    def results(self) -> Iterator[tuple[str, float]]:
        gen, real = np.concatenate(list(self.generated.values())), np.concatenate(list(self.real.values()))
        yield "fid_frames_generated", len(gen)
        yield "fid_frames_real", len(real)
        if min(len(gen), len(real)) >= MIN_DISTANCE_SAMPLES:
            yield "fid", frechet_distance_from_features(gen, real)

    def per_clip(self) -> dict[str, dict]:
        return {c: {"fid": _frechet_or_nan(frechet_distance_from_features, list(self.generated[c]),
                                           list(self.real[c])),
                    "fid_frames": len(self.generated[c])} for c in self.generated}

    def details(self) -> dict:
        return {"extractor": str(self.features.path)}


FIGURE_METRICS = ("psnr_figure", "ssim_figure", "l1_figure")


@dataclass
class FrameEvaluator:
    """PSNR, SSIM, L1 per aligned frame; for clips with figure masks also over the figure alone."""

    ssim_gaussian_weights: bool = False
    per_frame: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    name: str = "frames"

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        gen, gt = clip.generated_aligned, clip.ground_truth
        if clip.figure_masks is None:
            self.per_frame[clip.clip_id] = {
                "psnr": frame_metrics.psnr(gen, gt),
                "ssim": frame_metrics.ssim(gen, gt, gaussian_weights=self.ssim_gaussian_weights, progress=progress),
                "l1": frame_metrics.l1(gen, gt),
            }
            return
        masks = clip.figure_masks
        ssim, ssim_figure = frame_metrics.ssim_with_masks(gen, gt, masks, gaussian_weights=self.ssim_gaussian_weights,
                                                          progress=progress)
        self.per_frame[clip.clip_id] = {
            "psnr": frame_metrics.psnr(gen, gt), "ssim": ssim, "l1": frame_metrics.l1(gen, gt),
            "psnr_figure": frame_metrics.psnr_masked(gen, gt, masks), "ssim_figure": ssim_figure,
            "l1_figure": frame_metrics.l1_masked(gen, gt, masks),
        }

    def results(self) -> Iterator[tuple[str, float]]:
        # every compared frame weighs the same, whatever its clip's length
        for metric in ("psnr", "ssim", "l1"):
            yield metric, float(np.mean(np.concatenate([c[metric] for c in self.per_frame.values()])))
        yield "frames_compared", int(sum(len(c["psnr"]) for c in self.per_frame.values()))
        masked = [c for c in self.per_frame.values() if "psnr_figure" in c]
        if masked:  # only clips with figure_mask.npz; frames whose mask is empty (nan) are left out
            for metric in FIGURE_METRICS:
                values = np.concatenate([c[metric] for c in masked])
                kept = values[~np.isnan(values)]
                yield metric, float(np.mean(kept)) if kept.size else float("nan")
            yield "frames_compared_figure", int(sum(np.sum(~np.isnan(c["psnr_figure"])) for c in masked))

    def per_clip(self) -> dict[str, dict]:
        return {c: {**{k: float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan") for k, v in m.items()},
                    "frames": len(m["psnr"])} for c, m in self.per_frame.items()}

    def details(self) -> dict:
        return {clip: {k: v.tolist() for k, v in metrics.items()} for clip, metrics in self.per_frame.items()}


@dataclass
class LPIPSEvaluator:
    metric: LPIPSMetric
    net: str = "alex"
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "lpips"

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        self.per_frame[clip.clip_id] = self.metric(clip.generated_aligned, clip.ground_truth)
        progress(len(clip.generated_aligned))

    def results(self) -> Iterator[tuple[str, float]]:
        yield f"lpips_{self.net}", float(np.mean(np.concatenate(list(self.per_frame.values()))))

    def per_clip(self) -> dict[str, dict]:
        return {c: {f"lpips_{self.net}": float(np.mean(v)), "frames": len(v)} for c, v in self.per_frame.items()}

    def details(self) -> dict:
        return {"net": self.net, "per_clip": {c: v.tolist() for c, v in self.per_frame.items()}}


# The poses the model was given for a clip's aligned frames: (keypoints (n, 18, 2) normalised, scores (n, 18)).
DrivingPoses = Callable[[AlignedClip], tuple[np.ndarray, np.ndarray]]


def visible(keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Keypoints that count: score above the threshold and inside the canvas (normalised
    coordinates in [0, 1]; a point predicted or retargeted off the frame is not seen there)."""
    inside = np.all((keypoints >= 0.0) & (keypoints <= 1.0), axis=-1)
    return (scores > threshold) & inside


@dataclass
class _PoseClip:
    detected: np.ndarray  # (n, 18, 2) normalised
    detected_scores: np.ndarray
    target: np.ndarray
    target_scores: np.ndarray
    pixels: np.ndarray  # (w, h)
    source: str


# What the poses detected on generated frames are compared with (pose_metrics.target).
POSE_TARGETS = ("driving", "ground_truth", "true_poses")


@dataclass
class PoseEvaluator:
    """Body poses detected on the generated frames against a target, `target`:

    - "driving": the driving poses the model got: the clip's driving_poses.npz when it has
      one, else `driving_poses(clip)` (the pose package's pipeline, reference alignment included);
    - "ground_truth": the same detector on the aligned ground-truth frames (self-reenactment:
      a detector's systematic errors on a kind of figure hit both sides alike);
    - "true_poses": the clip's ground_truth_poses.npz (a renderer's exact keypoints)."""

    detect: BodyDetector
    driving_poses: DrivingPoses | None = None
    score_threshold: float = VISIBLE_SCORE
    target: str = "driving"
    clips: dict[str, _PoseClip] = field(default_factory=dict)
    name: str = "pose"

    def __post_init__(self):
        if self.target not in POSE_TARGETS:
            raise UserError(f"pose_metrics.target={self.target!r}: allowed values are {', '.join(POSE_TARGETS)}")

    def _detect_all(self, frames: np.ndarray, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
        found = []
        for frame in frames:
            found.append(self.detect(frame))
            progress(1)
        return np.stack([k for k, _ in found]), np.stack([s for _, s in found])

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        h, w = clip.generated.shape[1:3]
        kp, sc = self._detect_all(clip.generated_aligned, progress)
        if self.target == "ground_truth":
            # the same detector on both sides: its own bias on the figures cancels out
            (tkp, tsc), source = self._detect_all(clip.ground_truth, _no_progress), "detected on the ground truth"
        elif self.target == "true_poses":
            if clip.true_poses is None:
                raise UserError(f"clip {clip.clip_id}: pose_metrics.target=true_poses needs the clip's "
                                "ground_truth_poses.npz")
            (tkp, tsc), source = clip.true_poses, "ground_truth_poses.npz"
        elif clip.target_poses is not None:
            (tkp, tsc), source = clip.target_poses, "driving_poses.npz"
        elif self.driving_poses is not None:
            (tkp, tsc), source = self.driving_poses(clip), "extracted with controlnext_jax.pose (reference-aligned)"
        else:
            raise UserError(f"clip {clip.clip_id}: no driving_poses.npz and no pose extractor for the driving video")
        if tkp.shape != kp.shape or tsc.shape != sc.shape:
            raise UserError(f"clip {clip.clip_id}: {tkp.shape[0]} target poses for {kp.shape[0]} aligned frames")
        self.clips[clip.clip_id] = _PoseClip(kp, sc, tkp, tsc, np.array([w, h], np.float64), source)

    def _accuracy(self, clip_ids: list[str]):
        cs = [self.clips[c] for c in clip_ids]
        return pose_metrics.pose_accuracy(
            np.concatenate([c.detected * c.pixels for c in cs]),
            np.concatenate([visible(c.detected, c.detected_scores, self.score_threshold) for c in cs]),
            np.concatenate([c.detected_scores for c in cs]),
            np.concatenate([c.target * c.pixels for c in cs]),
            np.concatenate([visible(c.target, c.target_scores, self.score_threshold) for c in cs]))

    def results(self) -> Iterator[tuple[str, float]]:
        summary, _ = self._accuracy(list(self.clips))
        yield from summary.items()

    def per_clip(self) -> dict[str, dict]:
        return {c: self._accuracy([c])[0] for c in self.clips}

    def curves(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-clip per-frame curves: {clip_id: {metric: (frames,)}}."""
        return {c: self._accuracy([c])[1] for c in self.clips}

    def details(self) -> dict:
        def people(keypoints, scores):
            return {"keypoints": np.round(keypoints, 6).tolist(), "scores": np.round(scores, 6).tolist()}

        return {"target_source": {c: v.source for c, v in self.clips.items()},
                "score_threshold": self.score_threshold,
                "keypoints_layout": "per frame, the 18 OpenPose body keypoints as [x / width, y / height]; "
                                    "visible = score > score_threshold and inside [0, 1]",
                "keypoints": {c: {"detected": people(v.detected, v.detected_scores),
                                  "target": people(v.target, v.target_scores)} for c, v in self.clips.items()},
                "per_frame": {c: {k: v.tolist() for k, v in m.items()} for c, m in self.curves().items()}}


@dataclass
class SeamEvaluator:
    batch_frames: int = 24
    overlap: int = 6
    first_transition: int = 1
    radius: int = 4
    clips: dict[str, dict] = field(default_factory=dict)
    name: str = "seams"

    def __post_init__(self):
        if self.batch_frames < 1 or not 0 <= self.overlap < self.batch_frames:
            raise UserError(f"sampling.batch_frames={self.batch_frames}, sampling.overlap={self.overlap}: need "
                            "batch_frames >= 1 and 0 <= overlap < batch_frames")
        if self.radius < 1:
            raise UserError(f"seams.radius={self.radius}: must be >= 1")

    def update(self, clip: AlignedClip, progress: Progress = _no_progress) -> None:
        boundaries = seams.boundary_transitions(len(clip.generated), self.batch_frames, self.overlap)
        gt_changes = seams.frame_changes(clip.ground_truth) if len(clip.ground_truth) > 1 else np.zeros(0)
        # ground-truth transition j is generated transition j + first (same moments)
        shift = self.first_transition
        gt_boundaries = [b - shift for b in boundaries if 0 <= b - shift < len(gt_changes)]
        changes = seams.frame_changes(clip.generated) if len(clip.generated) > 1 else np.zeros(0)
        self.clips[clip.clip_id] = {
            "changes": changes, "boundaries": boundaries,
            "gt_changes": gt_changes, "gt_boundaries": gt_boundaries, "first_transition": shift,
            "window_starts": window_starts(len(clip.generated), self.batch_frames, self.overlap)}
        progress(len(clip.generated_aligned))

    def stats(self, clip_ids: list[str] | None = None) -> tuple[seams.SeamStats, seams.SeamStats]:
        cs = [self.clips[c] for c in (self.clips if clip_ids is None else clip_ids)]
        gen = seams.seam_stats([(c["changes"], c["boundaries"]) for c in cs], self.first_transition, self.radius)
        gt = seams.seam_stats([(c["gt_changes"], c["gt_boundaries"]) for c in cs], 0, self.radius)
        return gen, gt

    @staticmethod
    def _values(gen: seams.SeamStats, gt: seams.SeamStats) -> dict:
        return {"seam_ratio": gen.ratio, "seam_local_ratio": gen.local_ratio, "seam_ratio_ground_truth": gt.ratio,
                "seam_boundary_change": gen.boundary_mean, "seam_interior_change": gen.interior_mean,
                "seam_boundaries": gen.num_boundaries}

    def results(self) -> Iterator[tuple[str, float]]:
        yield from self._values(*self.stats()).items()

    def per_clip(self) -> dict[str, dict]:
        return {c: self._values(*self.stats([c])) for c in self.clips}

    def details(self) -> dict:
        return {"batch_frames": self.batch_frames, "overlap": self.overlap,
                "per_clip": {c: {"changes": v["changes"].tolist(), "boundary_transitions": v["boundaries"],
                                 "window_starts": v["window_starts"]} for c, v in self.clips.items()}}
