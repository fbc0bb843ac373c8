"""Evaluators: each takes aligned clips one by one (`update`) and then yields its
`(name, value)` results; the metric maths lives in the small pure modules beside this one.

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
from controlnext_jax.sampling.windows import window_starts

# A body-pose detector: uint8 (h, w, 3) frame -> (keypoints (18, 2) normalised x/W, y/H; scores (18,)).
BodyDetector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class FVDEvaluator:
    """FVD between the same clips of the generated and the ground-truth videos.

    Clips of both sides queue up across videos and go to the I3D in full batches (a video
    often gives a single clip; embedding per video would pad every batch)."""

    embedder: I3DEmbedder
    sampling: ClipSampling
    generated: list[np.ndarray] = field(default_factory=list)
    real: list[np.ndarray] = field(default_factory=list)
    _queue: list[tuple[bool, np.ndarray]] = field(default_factory=list, repr=False)  # (is_generated, clip)
    name: str = "fvd"

    def _flush(self, everything: bool) -> None:
        size = self.embedder.batch_size
        while len(self._queue) >= size or (everything and self._queue):
            batch, self._queue = self._queue[:size], self._queue[size:]
            for (is_generated, _), embedding in zip(batch, self.embedder([clip for _, clip in batch])):
                (self.generated if is_generated else self.real).append(embedding)

    def update(self, clip: AlignedClip) -> None:
        # same clips of the generated and the ground-truth videos, at the same frame rate
        clips = [(True, c) for c in self.sampling.clips(clip.generated_aligned)]
        clips += [(False, c) for c in self.sampling.clips(clip.ground_truth)]
        if clips and self._queue and self._queue[0][1].shape != clips[0][1].shape:
            self._flush(everything=True)  # a batch holds one clip shape
        self._queue.extend((side, np.ascontiguousarray(c)) for side, c in clips)  # copies: the video can go
        self._flush(everything=False)

    def results(self) -> Iterator[tuple[str, float]]:
        self._flush(everything=True)
        yield "fvd_clips_generated", len(self.generated)
        yield "fvd_clips_real", len(self.real)
        if min(len(self.generated), len(self.real)) >= 2:
            yield "fvd", fvd_from_embeddings(np.stack(self.generated), np.stack(self.real))

    def details(self) -> dict:
        return {"sampling": self.sampling.describe(), "clip_length": self.sampling.clip_length,
                "frame_stride": self.sampling.frame_stride, "max_clips_per_video": self.sampling.max_clips,
                "clips_generated": len(self.generated), "clips_real": len(self.real)}


@dataclass
class FIDEvaluator:
    """FID between all aligned generated frames and all ground-truth frames (pooled over clips)."""

    features: FrameFeatures
    generated: list[np.ndarray] = field(default_factory=list)
    real: list[np.ndarray] = field(default_factory=list)
    name: str = "fid"

    def update(self, clip: AlignedClip) -> None:
        self.generated.append(self.features(clip.generated_aligned))
        self.real.append(self.features(clip.ground_truth))

    def results(self) -> Iterator[tuple[str, float]]:
        gen, real = np.concatenate(self.generated), np.concatenate(self.real)
        yield "fid_frames_generated", len(gen)
        yield "fid_frames_real", len(real)
        if min(len(gen), len(real)) >= 2:
            yield "fid", frechet_distance_from_features(gen, real)

    def details(self) -> dict:
        return {"extractor": str(self.features.path)}


@dataclass
class FrameEvaluator:
    ssim_gaussian_weights: bool = False
    per_clip: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    name: str = "frames"

    def update(self, clip: AlignedClip) -> None:
        gen, gt = clip.generated_aligned, clip.ground_truth
        self.per_clip[clip.clip_id] = {
            "psnr": frame_metrics.psnr(gen, gt),
            "ssim": frame_metrics.ssim(gen, gt, gaussian_weights=self.ssim_gaussian_weights),
            "l1": frame_metrics.l1(gen, gt),
        }

    def results(self) -> Iterator[tuple[str, float]]:
        # every compared frame weighs the same, whatever its clip's length
        for metric in ("psnr", "ssim", "l1"):
            yield metric, float(np.mean(np.concatenate([c[metric] for c in self.per_clip.values()])))
        yield "frames_compared", int(sum(len(c["psnr"]) for c in self.per_clip.values()))

    def details(self) -> dict:
        return {clip: {k: v.tolist() for k, v in metrics.items()} for clip, metrics in self.per_clip.items()}


@dataclass
class LPIPSEvaluator:
    metric: LPIPSMetric
    net: str = "alex"
    per_clip: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "lpips"

    def update(self, clip: AlignedClip) -> None:
        self.per_clip[clip.clip_id] = self.metric(clip.generated_aligned, clip.ground_truth)

    def results(self) -> Iterator[tuple[str, float]]:
        yield f"lpips_{self.net}", float(np.mean(np.concatenate(list(self.per_clip.values()))))

    def details(self) -> dict:
        return {"net": self.net, "per_clip": {c: v.tolist() for c, v in self.per_clip.items()}}


# The poses the model was given for a clip's aligned frames: (keypoints (n, 18, 2) normalised, scores (n, 18)).
DrivingPoses = Callable[[AlignedClip], tuple[np.ndarray, np.ndarray]]


@dataclass
class PoseEvaluator:
    """Body poses detected on the generated frames against the driving poses the model got:
    the clip's driving_poses.npz when it has one, else `driving_poses(clip)` (the pose
    package's pipeline, reference alignment included)."""

    detect: BodyDetector
    driving_poses: DrivingPoses | None = None
    score_threshold: float = 0.3
    pred: list[np.ndarray] = field(default_factory=list)
    pred_scores: list[np.ndarray] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)
    target_scores: list[np.ndarray] = field(default_factory=list)
    clip_ids: list[str] = field(default_factory=list)
    target_sources: dict[str, str] = field(default_factory=dict)
    name: str = "pose"
    _result: tuple | None = field(default=None, repr=False)

    def update(self, clip: AlignedClip) -> None:
        h, w = clip.generated.shape[1:3]
        pixels = np.array([w, h], np.float64)
        found = [self.detect(frame) for frame in clip.generated_aligned]
        kp, sc = np.stack([k for k, _ in found]), np.stack([s for _, s in found])
        if clip.target_poses is not None:
            (tkp, tsc), source = clip.target_poses, "driving_poses.npz"
        elif self.driving_poses is not None:
            (tkp, tsc), source = self.driving_poses(clip), "extracted with controlnext_jax.pose (reference-aligned)"
        else:
            raise UserError(f"clip {clip.clip_id}: no driving_poses.npz and no pose extractor for the driving video")
        if tkp.shape != kp.shape or tsc.shape != sc.shape:
            raise UserError(f"clip {clip.clip_id}: {tkp.shape[0]} target poses for {kp.shape[0]} aligned frames")
        self.target_sources[clip.clip_id] = source
        self.pred.append(kp * pixels)
        self.pred_scores.append(sc)
        self.target.append(tkp * pixels)
        self.target_scores.append(tsc)
        self.clip_ids.extend([clip.clip_id] * len(kp))

    def _evaluate(self):
        """(summary, per-frame curves) over every frame seen so far, computed once per state."""
        if self._result is None or self._result[0] != len(self.clip_ids):
            scores = np.concatenate(self.pred_scores)
            tscores = np.concatenate(self.target_scores)
            self._result = (len(self.clip_ids), pose_metrics.pose_accuracy(
                np.concatenate(self.pred), scores > self.score_threshold, scores,
                np.concatenate(self.target), tscores > self.score_threshold))
        return self._result[1]

    def results(self) -> Iterator[tuple[str, float]]:
        summary, _ = self._evaluate()
        yield from summary.items()

    def curves(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-clip per-frame curves: {clip_id: {metric: (frames,)}}."""
        _, curves = self._evaluate()
        ids = np.array(self.clip_ids)
        return {clip: {k: v[ids == clip] for k, v in curves.items()} for clip in dict.fromkeys(self.clip_ids)}

    def details(self) -> dict:
        return {"target_source": self.target_sources, "score_threshold": self.score_threshold,
                "per_frame": {c: {k: v.tolist() for k, v in m.items()} for c, m in self.curves().items()}}


@dataclass
class SeamEvaluator:
    batch_frames: int = 24
    overlap: int = 6
    first_transition: int = 1
    radius: int = 4
    per_clip: dict[str, dict] = field(default_factory=dict)
    name: str = "seams"

    def __post_init__(self):
        if self.batch_frames < 1 or not 0 <= self.overlap < self.batch_frames:
            raise UserError(f"sampling.batch_frames={self.batch_frames}, sampling.overlap={self.overlap}: need "
                             "batch_frames >= 1 and 0 <= overlap < batch_frames")
        if self.radius < 1:
            raise UserError(f"seams.radius={self.radius}: must be >= 1")

    def update(self, clip: AlignedClip) -> None:
        boundaries = seams.boundary_transitions(len(clip.generated), self.batch_frames, self.overlap)
        gt_changes = seams.frame_changes(clip.ground_truth) if len(clip.ground_truth) > 1 else np.zeros(0)
        # ground-truth transition j is generated transition j + first (same moments)
        shift = self.first_transition
        gt_boundaries = [b - shift for b in boundaries if 0 <= b - shift < len(gt_changes)]
        self.per_clip[clip.clip_id] = {
            "changes": seams.frame_changes(clip.generated), "boundaries": boundaries,
            "gt_changes": gt_changes, "gt_boundaries": gt_boundaries, "first_transition": shift,
            "window_starts": window_starts(len(clip.generated), self.batch_frames, self.overlap)}

    def stats(self) -> tuple[seams.SeamStats, seams.SeamStats]:
        gen = seams.seam_stats([(c["changes"], c["boundaries"]) for c in self.per_clip.values()],
                               self.first_transition, self.radius)
        gt = seams.seam_stats([(c["gt_changes"], c["gt_boundaries"]) for c in self.per_clip.values()],
                              0, self.radius)
        return gen, gt

    def results(self) -> Iterator[tuple[str, float]]:
        gen, gt = self.stats()
        yield "seam_ratio", gen.ratio
        yield "seam_local_ratio", gen.local_ratio
        yield "seam_ratio_ground_truth", gt.ratio
        yield "seam_boundary_change", gen.boundary_mean
        yield "seam_interior_change", gen.interior_mean
        yield "seam_boundaries", gen.num_boundaries

    def details(self) -> dict:
        return {"batch_frames": self.batch_frames, "overlap": self.overlap,
                "per_clip": {c: {"changes": v["changes"].tolist(), "boundary_transitions": v["boundaries"],
                                 "window_starts": v["window_starts"]} for c, v in self.per_clip.items()}}
