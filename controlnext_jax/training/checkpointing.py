"""Training checkpoints: everything a run needs to continue exactly where it stopped.

One checkpoint per saved step, `<directory>/<step>/`, written by orbax's `CheckpointManager`
as two items:

    state/   the arrays: {"train": TrainState (trainable, opt_state, ema, updates),
                          "rng": the PRNG key's raw key data}
    meta/    JSON: the step, the data loader's position, the key's implementation, the run
             record (the caller's config dict plus the code version) and a table of every
             saved array's shape and dtype, to recognise a directory of another run

Saving is asynchronous: `save` returns once the arrays are copied off the accelerator
and the files are written by a background thread while training continues; `wait()`
makes them durable (call it before exit, and after a forced save on SIGTERM, which
`controlnext_jax.cli` turns into an exception the train command can catch).

How a write is committed (orbax 0.12.8): a step is written as `<step>.orbax-checkpoint-tmp`,
then `commit_success.txt` is written into it and it is renamed to `<step>` (on object stores
without atomic rename the marker alone commits). So a checkpoint is complete exactly when
its step folder carries `commit_success.txt`; a killed writer leaves a `*.orbax-checkpoint-tmp`
folder, or a step folder without the marker. Both are skipped and removed when a
`TrainCheckpointer` opens the directory.

Restoring goes straight onto the caller's shardings (`abstract_state` holds
`jax.ShapeDtypeStruct`s with `.sharding`): each process reads only its shards, the model
is never gathered on one host.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from controlnext_jax.errors import UserError
from controlnext_jax.provenance import code_version
from controlnext_jax.training.step import TrainState

FORMAT = "controlnext-jax-train/1"
COMMIT_MARKER = "commit_success.txt"  # orbax's atomicity_types.COMMIT_SUCCESS_FILE
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's atomicity_types.TMP_DIR_SUFFIX
_RAW_KEY = "raw"  # `rng_impl` of a legacy uint32 key (jax.random.PRNGKey), stored as is


def array_table(tree) -> dict[str, list]:
    """{tree path: [shape, dtype]} of every array leaf: what identifies a run's state layout."""
    return {jax.tree_util.keystr(path): [list(leaf.shape), str(np.dtype(leaf.dtype))]
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run_record(config: Mapping) -> dict:
    """The record of a run's configuration (e.g. the Hydra config as a plain dict,
    `OmegaConf.to_container(cfg, resolve=True)`): the dict and the sha256 of its canonical JSON."""
    config = json.loads(json.dumps(config))
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {"config": config, "config_sha256": digest}


def abstract_of(tree):
    """The `jax.ShapeDtypeStruct` tree (shardings included) of a concrete state: the restore
    target of a single-process run that already holds a state of the right layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def is_complete(step_dir: epath.Path) -> bool:
    return step_dir.name.isdigit() and step_dir.is_dir() and (step_dir / COMMIT_MARKER).exists()


class TrainCheckpointer:
    """Periodic, asynchronous, rotating training checkpoints in `directory`.

    save_every: `save` writes when step % save_every == 0 (or when forced); keep: how many of
    the latest checkpoints stay on disk; async_save=False writes within `save` (debugging).
    Opening a directory removes the leftovers of killed writers (reported through `log`).
    """

    def __init__(self, directory: str | epath.PathLike, *, save_every: int, keep: int, async_save: bool = True,
                 log: Callable[[str], None] = print):
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise UserError(f"save_every={save_every!r}: must be an integer >= 1")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise UserError(f"keep={keep!r}: must be an integer >= 1")
        # orbax wants an absolute path; object-store URLs (gs://...) already are
        self.directory = epath.Path(directory if "://" in str(directory) else os.path.abspath(directory))
        self.save_every = save_every
        self.log = log
        self.removed = self._remove_incomplete()
        self._code_version = code_version()
        options = ocp.CheckpointManagerOptions(
            # `save` decides itself (every `save_every` steps, or forced) and always forces orbax
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, item_names=("state", "meta"), options=options)

    # ------------------------------------------------------------------ directory

    def _remove_incomplete(self) -> list[epath.Path]:
        """Remove what killed writers left (only the primary process deletes; others wait for it)."""
        removed = []
        if jax.process_index() == 0 and self.directory.is_dir():
            for entry in self.directory.iterdir():
                incomplete = TMP_SUFFIX in entry.name or (entry.name.isdigit() and not is_complete(entry))
                if incomplete and entry.is_dir():
                    entry.rmtree()
                    removed.append(entry)
                    self.log(f"[checkpoint] removed incomplete checkpoint {entry} (a write that did not finish)")
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("controlnext_train_checkpointer_cleanup")
        return removed

    def complete_steps(self) -> list[int]:
        """Steps whose checkpoint is committed, ascending (an in-flight write is not listed)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(e.name) for e in self.directory.iterdir() if is_complete(e))

    def latest_step(self) -> int | None:
        steps = self.complete_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ save

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def save(self, step: int, state: TrainState, *, data_position: Mapping, rng: jax.Array,
             record: Mapping | None = None, force: bool = False) -> bool:
        """Start writing a checkpoint of `step` if it is due (or `force`); False if not due or
        already on disk. Returns once the arrays are copied: `state` may be donated right after."""
        if not (force or self.should_save(step)) or step in self._manager.all_steps():
            return False
        rng_data, rng_impl = _key_data(rng)
        arrays = {"train": state, "rng": rng_data}
        meta = {"format": FORMAT, "step": int(step), "data_position": dict(data_position), "rng_impl": rng_impl,
                "record": {**(record or {}), "code_version": self._code_version}, "arrays": array_table(arrays)}
        json.dumps(meta)  # a position or record that is not JSON fails here, not in the writer thread
        return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                                meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        """Block until every started save is committed (and old ones rotated out)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ restore

    def restore(self, step: int | None, abstract_state: TrainState) -> tuple[TrainState, dict, jax.Array, dict]:
        """(state, data_position, rng, record) of checkpoint `step` (None: the latest complete one).

        `abstract_state`: the state's `jax.ShapeDtypeStruct`s with the shardings to restore onto
        (leaves without a sharding go to the first local device, single-process runs only). A
        checkpoint of a different layout (model size, trainable set, EMA, optimizer) is a
        UserError naming the directory and the first differences."""
        steps = self.complete_steps()
        if step is None:
            if not steps:
                raise UserError(f"{self.directory}: no complete checkpoint to resume from")
            step = steps[-1]
        elif step not in steps:
            raise UserError(f"{self.directory}: no complete checkpoint of step {step} "
                            f"(complete: {', '.join(map(str, steps)) or 'none'})")
        where = self.directory / str(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(f"{where}: not a controlnext-jax training checkpoint ({type(e).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{where}: not a controlnext-jax training checkpoint (format {FORMAT!r} expected)")
        abstract_state = _with_default_shardings(abstract_state)
        rng_shape, rng_dtype = meta["arrays"]["['rng']"]
        target = {"train": abstract_state,
                  "rng": jax.ShapeDtypeStruct(tuple(rng_shape), np.dtype(rng_dtype),
                                              sharding=_replicated_like(abstract_state))}
        difference = describe_difference(meta["arrays"], array_table(target))
        if difference:
            raise UserError(f"{where}: written by a different run configuration ({difference}); "
                            "resume with the configuration it was written with, or use a new checkpoint directory")
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        arrays = restored["state"]
        rng = arrays["rng"] if meta["rng_impl"] == _RAW_KEY else jax.random.wrap_key_data(
            arrays["rng"], impl=meta["rng_impl"])
        return TrainState(*arrays["train"]), meta["data_position"], rng, meta["record"]


def describe_difference(saved: Mapping[str, list], expected: Mapping[str, list], limit: int = 3) -> str:
    """'' when the two array tables agree; otherwise the first differences, in one line."""
    missing = [p for p in saved if p not in expected]
    new = [p for p in expected if p not in saved]
    changed = [p for p in saved if p in expected and list(saved[p]) != list(expected[p])]
    parts = []
    if changed:
        parts.append(f"{len(changed)} array(s) differ, first: " + ", ".join(
            f"{_show(p)} saved {_fmt(saved[p])} vs this run {_fmt(expected[p])}" for p in changed[:limit]))
    if missing:
        parts.append(f"{len(missing)} saved array(s) not in this run, first: {', '.join(map(_show, missing[:limit]))}")
    if new:
        parts.append(f"{len(new)} array(s) of this run not saved, first: {', '.join(map(_show, new[:limit]))}")
    return "; ".join(parts)


def _show(path: str) -> str:
    return path.removeprefix("['train']")  # the TrainState's own paths: .trainable[...], .opt_state...


def _fmt(entry: list) -> str:
    shape, dtype = entry
    return f"{dtype}{list(shape)}"


def _key_data(rng: jax.Array) -> tuple[jax.Array, str]:
    """(raw key data, implementation name) of a typed key; a legacy uint32 key is stored as is."""
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng), str(jax.random.key_impl(rng))
    return rng, _RAW_KEY


def _with_default_shardings(abstract):
    def fill(leaf):
        if getattr(leaf, "sharding", None) is not None:
            return leaf
        if jax.process_count() > 1:
            raise ValueError("restore: every leaf of abstract_state needs a sharding in a multi-process run")
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=jax.sharding.SingleDeviceSharding(
            jax.local_devices()[0]))

    return jax.tree.map(fill, abstract)


def _replicated_like(abstract) -> jax.sharding.Sharding:
    """The PRNG key's sharding: replicated over the devices that hold the state."""
    leaves = jax.tree.leaves(abstract)
    if not leaves:
        return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sharding = leaves[0].sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    devices = sorted(sharding.device_set, key=lambda d: d.id)
    if len(devices) == 1:
        return jax.sharding.SingleDeviceSharding(devices[0])
    mesh = jax.sharding.Mesh(np.array(devices), ("devices",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
