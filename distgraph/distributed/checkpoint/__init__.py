"""Distributed checkpoints: torch.distributed.checkpoint's `save` / `load` (import as dcp).

    import distgraph.distributed.checkpoint as dcp
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, optim)}
        dcp.save(state, checkpoint_id="ckpt/step-100")        # every rank writes its own shards, at once
    ...
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        state = {"model": model.state_dict(), "optim": FSDP.optim_state_dict(model, optim)}
        dcp.load(state, checkpoint_id="ckpt/step-100")        # in place, this rank's pieces only
        model.load_state_dict(state["model"])
        optim.load_state_dict(FSDP.optim_state_dict_to_load(model, optim, state["optim"]))

Why: a FULL_STATE_DICT checkpoint gathers the whole model (and the optimizer's state, twice its size for
Adam) on one rank and writes it from there; here each rank writes only what it holds, in parallel, and
nothing is gathered. The world size may change between save and load (a ShardedTensor's pieces are runs of
elements, filled from whichever chunks overlap them), and a plain model's state dict loads from an FSDP
model's checkpoint and back (`ShardedTensor.full_tensor`, or a plain tensor in the dict passed to `load`).

`save` / `load` are collectives inside `dg.distributed.launch` (every rank calls them with the same keys);
outside one, or with `no_dist=True`, they run as rank 0 of 1. The folder is layout.py's: one file per rank
(and rank 0's of the tensors every rank holds alike) plus `.metadata`, each written by `dg.save` (no pickle: a checkpoint is data, never code) and renamed into
place; `.metadata` comes last, after every rank's file, so a save cut short leaves no checkpoint that `load`
would take. Files are read where `load` runs: ranks on other nodes need the folder on shared storage, as
torch's FileSystemReader does — or, under Ray Train, each rank saves into a temporary folder of its own and
reports it: `train.report` merges the ranks' folders into one checkpoint (rank 0's holds `.metadata`).
"""

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from distgraph.autograd.tensor import Tensor
from distgraph.distributed import loop
from distgraph.distributed.checkpoint.layout import (
    METADATA,
    VERSION,
    fill,
    flatten,
    is_array,
    merge,
    rank_chunks,
    validate,
    written,
)
from distgraph.distributed.checkpoint.sharded import ShardedTensor
from distgraph.distributed.checkpoint.stateful import Stateful, expand, hand_back
from distgraph.errors import ConfigError, DistributedError, FileFormatError, ShapeError

__all__ = [
    "FileSystemReader",
    "FileSystemWriter",
    "Metadata",
    "ShardedTensor",
    "Stateful",
    "async_save",
    "load",
    "save",
]


@dataclass
class FileSystemWriter:
    """torch's storage writer for a folder. `overwrite=False`: a save into a folder that holds a checkpoint is
    refused. Accepted as torch's and without effect here: `single_file_per_rank` (always one file per rank),
    `sync_files` (every file is fsynced), `thread_count`, `per_thread_copy_ahead`, `cache_staged_state_dict`."""

    path: str
    single_file_per_rank: bool = True
    sync_files: bool = True
    thread_count: int = 1
    per_thread_copy_ahead: int = 10_000_000
    cache_staged_state_dict: bool = False
    overwrite: bool = True


@dataclass
class FileSystemReader:
    path: str


@dataclass
class Metadata:
    """What `save` returns and `.metadata` holds: each key's entry (layout.py)."""

    state_dict_metadata: dict
    world_size: int


def _folder(checkpoint_id, storage, what):
    path = checkpoint_id if checkpoint_id is not None else getattr(storage, "path", None)  # (torch's: the id wins)
    if path is None:
        raise ConfigError(
            f"{what}: give checkpoint_id= (a folder) or a storage {'writer' if what == 'dcp.save' else 'reader'}"
        )
    return os.fspath(path)


def _refuse_overwrite(path, storage, what):
    if storage is not None and not storage.overwrite and os.path.exists(os.path.join(path, METADATA)):
        raise ConfigError(f"{what}: {path} already holds a checkpoint and the writer has overwrite=False")


def _world(no_dist):
    distributed = loop.is_launched() and not no_dist
    return (loop.rank(), loop.world_size()) if distributed else (0, 1)


def _prepare(state_dict, path, what, no_dist, stage):
    """What every save does first, with the collective in it: this rank's chunks (host copies with `stage`),
    the old index removed, every rank's entries merged → (rank, world, arrays, merged, rank 0's token)."""
    rank, world = _world(no_dist)
    wait(_pending)  # this process's async saves finish first: two saves never interleave (their errors are
    _pending.clear()  # their futures' to raise)
    arrays, entries = {}, {}

    def chunks():
        nonlocal arrays, entries
        leaves, _ = flatten(state_dict, what)
        arrays, entries = rank_chunks(leaves, rank, stage)
        os.makedirs(path, exist_ok=True)  # (each rank may name a folder of its own: Ray Train merges them)
        if rank == 0 and os.path.exists(os.path.join(path, METADATA)):  # (a save cut short leaves no index)
            os.remove(os.path.join(path, METADATA))

    error = _attempt(chunks)
    mine = (entries, uuid.uuid4().hex if rank == 0 else None, error if world == 1 else _text(error))
    per_rank = loop.allgather_object(mine) if world > 1 else [mine]
    _raise_any(what, "preparing", [e for _, _, e in per_rank])
    merged = merge([e for e, _, _ in per_rank], what)
    return rank, world, written(arrays, merged), merged, per_rank[0][1]


def _attempt(fn):
    """→ None, or the exception `fn` raised (every rank is then told of it: `_raise_any`)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def _text(error):
    """An exception as what the other ranks are told (text: not every exception pickles back)."""
    return None if error is None else f"{type(error).__name__}: {error}"


def _raise_any(what, step, errors):
    """Every rank's outcome of `step`, by rank → raised on every rank if one failed: alone the exception
    itself; among ranks (their outcomes as `_text`) a DistributedError naming them, no rank left waiting."""
    failed = {r: e for r, e in enumerate(errors) if e is not None}
    if len(errors) == 1 and failed:
        raise failed[0]
    if failed:
        raise DistributedError(
            f"{what}: {step} failed on rank(s) {sorted(failed)}: "
            + "; ".join(f"rank {r}: {e}" for r, e in failed.items())
        )


def _agree(world, what, step, error):
    """`_raise_any` of every rank's outcome (a collective among ranks)."""
    _raise_any(what, step, loop.allgather_object(_text(error)) if world > 1 else [error])


def _write_files(path, files):
    import distgraph as dg

    for name, arrays in files.items():
        dg.save(arrays, os.path.join(path, name))


def _write_index(path, world, merged):
    import distgraph as dg

    dg.save({"version": VERSION, "world_size": world, "entries": merged}, os.path.join(path, METADATA))


def save(state_dict, *, checkpoint_id=None, storage_writer=None, planner=None, process_group=None, no_dist=False):
    """Every rank's part of `state_dict` into the folder `checkpoint_id` → Metadata (on every rank).
    `planner` and `process_group` must be None (torch's defaults: every rank of the launch)."""
    _refuse_extras("dcp.save", planner, process_group)
    path = _folder(checkpoint_id, storage_writer, "dcp.save")
    _refuse_overwrite(path, storage_writer, "dcp.save")
    rank, world, arrays, merged, _ = _prepare(expand(state_dict), path, "dcp.save", no_dist, stage=False)
    # each step's outcome gathered from every rank (not a barrier): one rank's failed write (a full disk, an
    # object dg.save refuses) is raised on every rank instead of leaving the others waiting for it
    _agree(world, "dcp.save", "writing", _attempt(lambda: _write_files(path, arrays)))
    index = _attempt(lambda: _write_index(path, world, merged)) if rank == 0 else None
    _agree(world, "dcp.save", "writing the index", index)
    return Metadata(merged, world)


_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcp-async-save")  # (saves finish in order)
_pending = []  # this process's async saves not yet seen finished


def async_save(
    state_dict, *, checkpoint_id=None, storage_writer=None, planner=None, process_group=None, no_dist=False,
    timeout_s=600.0,
):  # fmt: skip
    """`save`, returning once this rank's part is copied to host memory (and the ranks agreed on the index):
    the files are written by a thread while training goes on → a `concurrent.futures.Future` of the Metadata.
    On rank 0 it is done when the checkpoint is whole (every rank's file, then `.metadata`); on the others when
    their own file is. The thread meets no collective (training's own may run meanwhile): each rank marks its
    file done with a marker file of this save, which rank 0 waits for (up to `timeout_s`) — so every rank must
    save into one folder they all see (not Ray Train's folder per rank)."""
    _refuse_extras("dcp.async_save", planner, process_group)
    path = _folder(checkpoint_id, storage_writer, "dcp.async_save")
    _refuse_overwrite(path, storage_writer, "dcp.async_save")
    rank, world, arrays, merged, token = _prepare(expand(state_dict), path, "dcp.async_save", no_dist, stage=True)

    def marker(r, outcome="done"):
        return os.path.join(path, f".{outcome}-{token}-{r}")

    def write():
        try:
            _write_files(path, arrays)
        except Exception as exc:  # (rank 0 learns of it from the folder, not from a timeout)
            with open(marker(rank, "failed"), "w") as f:
                f.write(_text(exc))
            raise
        with open(marker(rank), "w"):
            pass
        if rank == 0:
            try:
                _await_ranks(path, world, marker, timeout_s)
                _write_index(path, world, merged)
            finally:  # (this save's markers go, whatever came of it)
                for r in range(world):
                    for outcome in ("done", "failed"):
                        if os.path.exists(marker(r, outcome)):
                            os.remove(marker(r, outcome))
        return Metadata(merged, world)

    future = _writer.submit(write)
    _pending.append(future)
    return future


def _await_ranks(path, world, marker, timeout_s):
    """Rank 0's async thread: until every rank's file is written (its marker there); a rank whose write
    failed (its "failed" marker) or a timeout raises, naming the ranks."""
    deadline = time.monotonic() + timeout_s
    while missing := [r for r in range(world) if not os.path.exists(marker(r))]:
        failed = [r for r in missing if os.path.exists(marker(r, "failed"))]
        if failed:
            reasons = []
            for r in failed:
                with open(marker(r, "failed")) as f:
                    reasons.append(f"rank {r}: {f.read()}")
            raise DistributedError(
                f"dcp.async_save: writing into {path} failed on rank(s) {failed}: " + "; ".join(reasons)
            )
        if time.monotonic() > deadline:
            raise DistributedError(
                f"dcp.async_save: rank(s) {missing} did not finish writing into {path} within {timeout_s:.0f}s "
                "(async_save needs one folder every rank sees)"
            )
        time.sleep(0.005)


def load(state_dict, *, checkpoint_id=None, storage_reader=None, planner=None, process_group=None, no_dist=False):
    """The checkpoint's values into `state_dict`, in place: tensors and arrays copied into (cast to their
    dtype, as torch's copy_), a ShardedTensor's pieces filled (whatever world size saved it), other values
    replaced. Every key of `state_dict` must be in the checkpoint, with its shape; keys only the checkpoint
    has are left out (torch's rule)."""
    import distgraph as dg

    _refuse_extras("dcp.load", planner, process_group)
    path = _folder(checkpoint_id, storage_reader, "dcp.load")
    if not os.path.isdir(path):
        raise FileFormatError(f"{path}: no such checkpoint folder")
    index = os.path.join(path, METADATA)
    if not os.path.exists(index):
        raise FileFormatError(f"{path}: no {METADATA} in it — not a checkpoint, or a save that did not finish")
    entries = validate(dg.load(index), path)
    expanded = expand(state_dict, entries) if isinstance(state_dict, dict) else state_dict
    _load_into(expanded, entries, path)
    hand_back(state_dict, expanded)


def _load_into(state_dict, entries, path):
    import distgraph as dg

    leaves, places = flatten(state_dict, "dcp.load")
    missing = [k for k in leaves if k not in entries]
    if missing:
        raise ConfigError(
            f"dcp.load: missing key(s) in checkpoint {path}: {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    files = {}

    def read(chunk):
        name = chunk["file"]
        if name not in files:  # (each file read once, and only if a chunk this rank needs lies in it)
            files[name] = dg.load(os.path.join(path, name), map_location="cpu")
        if chunk["name"] not in files[name] or files[name][chunk["name"]].shape != (chunk["numel"],):
            raise FileFormatError(f"{path}: {name} lacks chunk {chunk['name']!r} of {chunk['numel']} elements")
        return files[name][chunk["name"]]

    for key, value in leaves.items():
        entry = entries[key]
        if isinstance(value, ShardedTensor) or is_array(value):
            if entry["kind"] != "tensor":
                raise ConfigError(f"dcp.load: {key!r} is a tensor here but an object in checkpoint {path}")
            _load_tensor(key, value, entry, read, path)
        else:
            if entry["kind"] != "object":
                raise ConfigError(f"dcp.load: {key!r} is an object here but a tensor in checkpoint {path}")
            container, k = places[key]
            if isinstance(container, tuple):
                raise ConfigError(
                    f"dcp.load: {key!r} lies in a tuple, which cannot be loaded into in place (use a list)"
                )
            container[k] = entry["value"]


def _load_tensor(key, value, entry, read, path):
    shape = value.shape if isinstance(value, ShardedTensor) else tuple(value.shape)
    if tuple(entry["shape"]) != tuple(shape):
        raise ShapeError(
            f"dcp.load: size mismatch for {key!r}: shape {tuple(entry['shape'])} in checkpoint {path}, "
            f"{tuple(shape)} here"
        )
    if isinstance(value, ShardedTensor):
        for offset, t in value.pieces:
            fill(t.array, offset, entry, read)
            t._vc[0] += 1  # (written in place: a graph that saved it must see it, as after torch's copy_)
        return
    if isinstance(value, Tensor):
        value._vc[0] += 1
    array = value.array if isinstance(value, Tensor) else value
    if array.flags.c_contiguous:  # (filled through a flat view of it)
        fill(array.reshape(-1), 0, entry, read)
    else:  # (a transposed tensor: a flat copy filled, then written back)
        flat = array.reshape(-1)
        fill(flat, 0, entry, read)
        array[...] = flat.reshape(array.shape)


def _refuse_extras(what, planner, process_group):
    if planner is not None:
        raise ConfigError(f"{what}: custom planners are not supported (planner must be None)")
    if process_group is not None:
        raise ConfigError(f"{what}: process_group must be None (every rank of the launch saves and loads)")
