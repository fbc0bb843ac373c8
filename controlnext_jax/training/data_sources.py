"""Where the training videos are and how they are described: the data config and the records.

Two layouts (docs/release_semantics.md, Training, Data):

- ``format="meta_info"``: the release's ``meta_info.json``, a list of
  ``{"video_path", "guide_path", "meta_info"}`` (video, its pose video, and an optional
  per-frame JSON with ``hands_boxes`` / ``hands_score``). The release opens these paths as
  given, so relative ones depend on the directory training is started from; we resolve
  relative paths against the folder of ``meta_info.json`` so that a data set can be moved.
- ``format="pairs"``: a plain folder ``root`` holding ``videos/<name>.mp4`` and the pose video
  of each under the same file name in ``poses/``, plus optionally ``meta/<stem>.json``, the
  per-frame hand boxes in the release's format, and ``masks/<stem>.npz``, the figure masks
  `controlnext-synth` writes (used by ``figure_weight``). Either layout may give frame arrays
  (``.npy``, `frame_array`) instead of videos, which need no ffmpeg. Pose frame i is the pose of
  video frame i (lengths may differ by less than 25 frames, as the release allows); the pose video may be
  drawn at another resolution (it is cropped at the same relative place). Note that
  `controlnext-pose` writes an *inference* pose video whose frame 0 is the reference image's
  pose, one frame ahead of the driving video: such a file is not aligned frame by frame.

`check_data` is the cheap up-front check a command runs before heavy work: it reads the
listing, never a video.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from controlnext_jax.errors import UserError, require_choice, require_int
from controlnext_jax.training.figure_weight import mask_path
from controlnext_jax.training.frame_array import FRAME_ARRAY_SUFFIX

FORMATS = ("meta_info", "pairs")
ON_BAD_VIDEO = ("skip", "stop")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", FRAME_ARRAY_SUFFIX)  # pairs: the files listed in videos/
LATENT_FACTOR = 8  # the VAE downsamples by 8: training sizes must be multiples of it
MAX_FIGURE_WEIGHT = 100.0  # beyond this the background would hardly train at all


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the loader reads and how it cuts clips. Defaults are the release's training script
    (width 576, height 1024 in its own names: portrait frames, 14 frames, every third one)."""

    format: str = "meta_info"
    root: str | None = None  # pairs: the folder; meta_info: where meta_info.json is when `meta_info` is unset
    meta_info: str | None = None  # meta_info: path of meta_info.json
    height: int = 1024
    width: int = 576
    sample_n_frames: int = 14
    interval_frame: int = 3  # 0: a random interval in 2..7 per clip, as the release
    batch_size: int = 1
    workers: int = 2  # background processes; 0 loads in the calling process
    prefetch: int = 2  # batches buffered per worker
    seed: int = 0
    on_bad_video: str = "skip"  # skip: warn, count and draw a replacement; stop: UserError
    hand_weight: bool | None = None  # None: on for meta_info (it carries hand boxes), off for pairs
    figure_weight: float = 0.0  # pairs with masks/: the loss weight is 1 + this inside the figure (0: off)

    @property
    def use_hand_weight(self) -> bool:
        return self.format == "meta_info" if self.hand_weight is None else bool(self.hand_weight)

    @property
    def source(self) -> str:
        """The listing's path, for messages."""
        return str(self.meta_info_path) if self.format == "meta_info" else str(self.root)

    @property
    def meta_info_path(self) -> Path:
        if self.meta_info:
            return Path(self.meta_info)
        if self.root:
            return Path(self.root) / "meta_info.json"
        raise UserError("meta_info: not set (give meta_info=<path of meta_info.json> or root=<its folder>)")


@dataclasses.dataclass(frozen=True)
class Record:
    """One training video: its file, its pose video, its optional per-frame hand meta and
    its optional figure masks."""

    video: str
    pose: str
    meta: str | None
    mask: str | None = None


def check_data(cfg: DataConfig) -> list[Record]:
    """Validate the config and read the listing (no video is opened): the records, or a
    one-line `UserError` naming the parameter or file and what is wrong."""
    require_choice("format", cfg.format, FORMATS)
    require_choice("on_bad_video", cfg.on_bad_video, ON_BAD_VIDEO)
    for name in ("height", "width"):
        value = require_int(name, getattr(cfg, name), lo=LATENT_FACTOR)
        if value % LATENT_FACTOR:
            raise UserError(f"{name}={value}: must be a multiple of {LATENT_FACTOR} (the VAE's downsampling)")
    require_int("sample_n_frames", cfg.sample_n_frames, lo=1)
    require_int("interval_frame", cfg.interval_frame, lo=0)
    require_int("batch_size", cfg.batch_size, lo=1)
    require_int("workers", cfg.workers, lo=0)
    require_int("prefetch", cfg.prefetch, lo=1)
    require_int("seed", cfg.seed, lo=0)
    if cfg.hand_weight not in (None, True, False):
        raise UserError(f"hand_weight={cfg.hand_weight!r}: must be true, false or null (on for meta_info)")
    _check_figure_weight(cfg)
    records = _read_meta_info(cfg.meta_info_path) if cfg.format == "meta_info" else _list_pairs(cfg.root)
    if not records:
        raise UserError(f"{'meta_info' if cfg.format == 'meta_info' else 'root'}={cfg.source}: lists no video")
    if cfg.figure_weight:
        missing = [r.video for r in records if r.mask is None]
        if missing:
            raise UserError(f"figure_weight={cfg.figure_weight}: needs the figure masks of every video "
                            f"(masks/<name>.npz beside videos/); {len(missing)} of {len(records)} have none, "
                            f"e.g. {missing[0]}")
    return records


def _check_figure_weight(cfg: DataConfig) -> None:
    value = cfg.figure_weight
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_FIGURE_WEIGHT:
        raise UserError(f"figure_weight={value!r}: must be a number from 0 (off) to {MAX_FIGURE_WEIGHT:g}")
    if value and cfg.format != "pairs":
        raise UserError(f"figure_weight={value}: needs format=pairs (figure masks in masks/ beside videos/)")


def _read_meta_info(path: Path) -> list[Record]:
    where = f"meta_info={path}"
    if not path.exists():
        raise UserError(f"{where}: file not found")
    if not path.is_file():
        raise UserError(f"{where}: not a file")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(entries, list):
        raise UserError(f"{where}: must hold a JSON list of {{video_path, guide_path, meta_info}} objects")
    base = path.parent
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"{where}: entry {i} is not an object")
        for key in ("video_path", "guide_path"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise UserError(f"{where}: entry {i} has no {key!r} (a path string)")
        meta = entry.get("meta_info")
        if meta is not None and not isinstance(meta, str):
            raise UserError(f"{where}: entry {i}: 'meta_info' must be a path string")
        records.append(Record(_resolve(base, entry["video_path"]), _resolve(base, entry["guide_path"]),
                              _resolve(base, meta) if meta else None))
    return records


def _resolve(base: Path, path: str) -> str:
    return str(base / os.path.expanduser(path))  # an absolute path stays as it is


def _list_pairs(root: str | None) -> list[Record]:
    if not root:
        raise UserError("root: not set (give root=<folder with videos/ and poses/>)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"root={root}: {'not a folder' if root.exists() else 'folder not found'}")
    videos = root / "videos"
    if not videos.is_dir():
        raise UserError(f"root={root}: has no videos/ folder (pairs: videos/<name>.mp4 and poses/<name>.mp4, "
                        f"or .npy frame arrays)")
    if not (root / "poses").is_dir():
        raise UserError(f"root={root}: has no poses/ folder (pairs: videos/<name>.mp4 and poses/<name>.mp4, "
                        f"or .npy frame arrays)")
    records = []
    for video in sorted(videos.iterdir()):  # sorted: the record order, hence the stream, is fixed
        if video.suffix.lower() not in VIDEO_SUFFIXES or not video.is_file():
            continue
        meta = root / "meta" / f"{video.stem}.json"
        mask = mask_path(video)
        records.append(Record(str(video), str(root / "poses" / video.name), str(meta) if meta.is_file() else None,
                              str(mask) if mask.is_file() else None))
    return records
