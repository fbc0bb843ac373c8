"""The training data loader: an endless, shuffled, resumable stream of batches of clips.

    loader = TrainingDataLoader(cfg, position=saved)  # position: a previous loader.state(), or None
    for batch in loader:      # dicts of numpy arrays, see `load_clip`
        ...
        saved = loader.state()  # small JSON-serialisable dict
    loader.close()

Built on grain (docs/release_semantics.md, Training, Data): the record indices are
shuffled with a new permutation every epoch (grain's shuffle reseeds by epoch) and
repeated forever; each element is loaded by `_ClipLoader` with its own RNG derived from
(seed, record, epoch), so a batch depends only on the seed and its position in the stream,
never on the number of workers, their timing or the history. That makes the position just
the number of batches delivered: resuming slices the same stream there.

Bad data (missing, unreadable, damaged or too short files, a bad per-frame meta): the
record is skipped and a replacement drawn from the element's RNG, trying each record at
most once, so a batch is always full; the skips travel with the batch, and the loader
logs a warning (once per file) and counts them when it hands the batch over. With
``on_bad_video="stop"`` the first bad file is a `UserError`. Workers report user errors as
values rather than exceptions, so they surface in the main process as the same one-line
`UserError`; any other worker exception is re-raised there by grain.
"""

from __future__ import annotations

import logging

import grain.python as pygrain
import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.training.data_clip import BadRecord, load_clip
from controlnext_jax.training.data_sources import DataConfig, Record, check_data

__all__ = ["DataConfig", "Record", "TrainingDataLoader", "check_data"]

log = logging.getLogger(__name__)
_POSITION_KEYS = ("batches", "skipped", "seed", "batch_size", "records")


def clip_rng(seed: int, record: int, epoch: int, *salt: int) -> np.random.Generator:
    """The RNG of one clip: a function of the seed, the record and the epoch only (plus a
    salt for replacement draws), never of global state or worker."""
    return np.random.default_rng([seed, record, epoch, *salt])


class _ClipLoader:
    """grain's map_with_index function: stream index and record index -> one clip element
    {"frames", "poses", ["hand_weight"], "skips"} or {"error": message}."""

    def __init__(self, cfg: DataConfig, records: list[Record]):
        self.cfg, self.records = cfg, records
        self._bad: dict[int, tuple[str, str]] = {}  # records found bad in this process: not opened again

    def __call__(self, index: int, record: int) -> dict:
        n = len(self.records)
        epoch = index // n
        # try the drawn record, then every other one in an order drawn from its RNG
        others = [r for r in clip_rng(self.cfg.seed, record, epoch, 1).permutation(n).tolist() if r != record]
        skips = []
        for attempt, r in enumerate([record, *others]):
            # a replacement gets its own draws, unlike the same record's regular turn this epoch
            rng = clip_rng(self.cfg.seed, r, epoch, 0) if attempt == 0 else clip_rng(self.cfg.seed, r, epoch, 2, index)
            if r not in self._bad:
                try:
                    return {**load_clip(self.records[r], self.cfg, rng), "skips": skips}
                except BadRecord as e:
                    self._bad[r] = (e.file, e.reason)
                except UserError as e:  # e.g. ffmpeg missing: not a fact about this record
                    return {"error": str(e)}
            skips.append(self._bad[r])
            if self.cfg.on_bad_video == "stop":
                file, reason = self._bad[r]
                return {"error": f"{file}: {reason} (on_bad_video=stop; 'skip' replaces bad videos)"}
        file, reason = skips[0]
        return {"error": f"no usable video in {self.cfg.source}: all {n} records failed "
                         f"(e.g. {file}: {reason})"}


def _collate(elements: list[dict]) -> dict:
    """Stack the clips; the skips of all of them, or the first error."""
    for element in elements:
        if "error" in element:
            return {"error": element["error"]}
    batch = {key: np.stack([e[key] for e in elements]) for key in elements[0] if key != "skips"}
    batch["skips"] = [skip for e in elements for skip in e["skips"]]
    return batch


class TrainingDataLoader:
    """Iterate for batches: `frames` float32 (b, f, H, W, 3) in [-1, 1], `poses` float32
    (b, f, H, W, 3) in [0, 1], frame 0 the reference and its pose, and `hand_weight` float32
    (b, f, H, W) when `cfg.use_hand_weight`. Endless; `state()` is the position after the
    batches delivered so far, `skipped` the number of records skipped, `bad_files` their
    reasons. Close it (or use it as a context manager) to stop the worker processes."""

    def __init__(self, cfg: DataConfig, position: dict | None = None):
        self.cfg = cfg
        self.records = check_data(cfg)
        self._batches, self.skipped = self._restore(position)
        self.bad_files: dict[str, str] = {}
        dataset = (pygrain.MapDataset.range(len(self.records)).shuffle(seed=cfg.seed).repeat()
                   .map_with_index(_ClipLoader(cfg, self.records))
                   .batch(cfg.batch_size, drop_remainder=True, batch_fn=_collate))[self._batches:]
        # no reading threads: the background work is the worker processes (or none with workers=0)
        stream = dataset.to_iter_dataset(pygrain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if cfg.workers > 0:
            stream = stream.mp_prefetch(pygrain.MultiprocessingOptions(num_workers=cfg.workers,
                                                                       per_worker_buffer_size=cfg.prefetch))
        self._iterator = iter(stream)

    def _restore(self, position: dict | None) -> tuple[int, int]:
        if position is None:
            return 0, 0
        if not isinstance(position, dict) or any(not isinstance(position.get(k), int) for k in _POSITION_KEYS):
            raise UserError(f"position: must be a loader state with integer {', '.join(_POSITION_KEYS)}; "
                            f"got {position!r}")
        expected = {"seed": self.cfg.seed, "batch_size": self.cfg.batch_size, "records": len(self.records)}
        for key, value in expected.items():
            if position[key] != value:
                raise UserError(f"position: was saved with {key}={position[key]}, the data now has {key}={value}; "
                                f"the stream would differ (start without the saved position)")
        return position["batches"], position["skipped"]

    def __iter__(self) -> TrainingDataLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            raise UserError("the training data loader is closed")
        batch = next(self._iterator)
        if "error" in batch:
            self.close()
            raise UserError(batch["error"])
        for file, reason in batch.pop("skips"):
            self.skipped += 1
            if file not in self.bad_files:
                self.bad_files[file] = reason
                log.warning("skipped %s: %s", file, reason)
        self._batches += 1
        # plain arrays: a worker's batch lives in shared memory until its array is deleted,
        # which would otherwise happen whenever (or after whatever) the caller drops it
        return {key: np.array(value) for key, value in batch.items()} if self.cfg.workers else batch

    def state(self) -> dict:
        """The position after the batches delivered so far (JSON-serialisable)."""
        return {"batches": self._batches, "skipped": self.skipped, "seed": self.cfg.seed,
                "batch_size": self.cfg.batch_size, "records": len(self.records)}

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        iterator, self._iterator = self._iterator, None
        raw = getattr(iterator, "_raw_iterator", None)  # grain's process pool, started on the first batch
        if raw is not None:
            raw.stop_prefetch()

    def __enter__(self) -> TrainingDataLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
