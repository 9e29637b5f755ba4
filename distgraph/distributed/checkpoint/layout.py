"""What a distributed checkpoint holds, as pure functions: nested state dicts flattened to dotted keys, each
rank's chunks, the merged index, and filling a run of a tensor's elements from the chunks.

A checkpoint folder (torch's DCP file names):

    .metadata        dg.save of {"version", "world_size", "entries": {key: entry}} — written last, by rank 0
    __R_0.distcp     dg.save of {chunk name: 1-d array}: the pieces rank R holds that no lower rank holds alike
    __0_1.distcp     the same, of the tensors every rank holds alike (rank 0's copy)

An entry is {"kind": "tensor", "shape", "dtype", "chunks": [{"file", "name", "offset", "numel"}]} —
the tensor's flattened elements [offset, offset + numel) lie in `file` under `name` — or
{"kind": "object", "value": ...} for anything else (a step count, param_groups), rank 0's. A ShardedTensor's
pieces are chunks of the ranks that hold them — a piece several ranks hold alike (the same elements: replicas
under FSDP's hybrid sharding) once, the lowest rank's; a plain tensor or array is one chunk, written by rank 0
only (every rank holds the same: torch's DCP writes a replicated tensor once too).
"""

import copy
import re

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace, to_device
from distgraph.distributed.checkpoint.sharded import ShardedTensor
from distgraph.errors import ConfigError, FileFormatError, ShapeError

VERSION = 1
METADATA = ".metadata"


def data_file(rank, index=0):
    return f"__{rank}_{index}.distcp"


DATA_FILE = re.compile(r"__\d+_[01]\.distcp")


def is_array(value):
    """A tensor, or a numpy/cupy array of one dimension or more (an optimizer's state); a 0-d array is an
    object here, on either device."""
    if isinstance(value, Tensor):
        return True
    arrayish = hasattr(value, "__array_interface__") or hasattr(value, "__cuda_array_interface__")
    return arrayish and getattr(value, "ndim", 0) > 0


def flatten(state_dict, what):
    """Nested dicts (and lists/tuples that hold tensors) → {dotted key: leaf} and {dotted key: (container,
    its key)} (where `load` puts a loaded object back). Keys are str or int (an optimizer's state by index)."""
    leaves, places = {}, {}

    def walk(node, prefix):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise ConfigError(f"{what}: state dict keys must be str or int, got {k!r} under {prefix or 'the top'}")
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) or (isinstance(v, list | tuple) and any(map(_holds_tensors, v))):
                walk(v, key)
                continue
            if key in leaves:
                raise ConfigError(f"{what}: two entries flatten to the key {key!r} (rename one)")
            leaves[key], places[key] = v, (node, k)

    if not isinstance(state_dict, dict):
        raise ConfigError(f"{what}: the state dict must be a dict, got {type(state_dict).__name__}")
    walk(state_dict, "")
    return leaves, places


def _holds_tensors(v):
    if isinstance(v, dict):
        return any(map(_holds_tensors, v.values()))
    if isinstance(v, list | tuple):
        return any(map(_holds_tensors, v))
    return isinstance(v, ShardedTensor) or is_array(v)


def rank_chunks(leaves, rank, stage=False):
    """What `rank` writes → ({file name: {chunk name: host array}}, {key: entry with this rank's chunks}):
        its pieces in `__R_0.distcp`, the tensors every rank holds alike (rank 0's copy, written once) in
        `__0_1.distcp` — so that a rank loading its pieces reads no file but its own and that one (and, for a piece
    a lower rank also held, that rank's: `merge`). With `stage`,
        every array a copy (async_save writes them while training changes the originals). Chunks are named by
        their order in their file (a key's own text could collide with another's)."""
    files, entries = {}, {}

    def chunk(a, offset, file):
        arrays = files.setdefault(file, {})
        out = to_device(a, "cpu")
        name = f"c{len(arrays)}"
        arrays[name] = np.ascontiguousarray(out.copy() if stage and out is a else out).reshape(-1)
        return {"file": file, "name": name, "offset": offset, "numel": int(a.size)}

    for key, value in leaves.items():
        if isinstance(value, ShardedTensor):
            chunks = [chunk(t.array, offset, data_file(rank)) for offset, t in value.pieces if t.shape[0]]
            entries[key] = {"kind": "tensor", "shape": list(value.shape), "dtype": str(value.dtype), "chunks": chunks}
        elif is_array(value):
            array = value.array if isinstance(value, Tensor) else value
            chunks = [chunk(array, 0, data_file(0, 1))] if rank == 0 else []
            entries[key] = {"kind": "tensor", "shape": list(array.shape), "dtype": str(array.dtype), "chunks": chunks}
        else:
            entries[key] = {"kind": "object", "value": copy.deepcopy(value) if stage else value}
    return files, entries


def merge(per_rank, what):
    """Every rank's entries → the checkpoint's: chunk lists joined; a key's kind, shape and dtype must agree.
    A chunk another rank already holds alike (the same elements: a replica's, under FSDP's hybrid sharding) is
    kept once, the lowest rank's, as torch's dedup of save plans (`written` drops it from the others' files).
    Such chunks are taken to hold the same values (replicas): which rank's is written is not checked."""
    merged = {}
    for rank, entries in enumerate(per_rank):
        for key, entry in entries.items():
            if key not in merged:
                merged[key] = dict(entry, chunks=list(entry.get("chunks", ())))
                continue
            seen = merged[key]
            fields = ("kind", "shape", "dtype")
            if any(seen.get(f) != entry.get(f) for f in fields):
                raise ConfigError(
                    f"{what}: the ranks disagree on {key!r}: "
                    + _describe(seen)
                    + " on an earlier rank, "
                    + _describe(entry)
                    + f" on rank {rank} (every rank must save the same keys alike)"
                )
            if entry["kind"] == "tensor":
                held = {(c["offset"], c["numel"]) for c in seen["chunks"]}
                seen["chunks"] += [c for c in entry["chunks"] if (c["offset"], c["numel"]) not in held]
    keys = [set(e) for e in per_rank]
    if any(k != keys[0] for k in keys):
        odd = sorted(set().union(*keys) - set.intersection(*keys))
        raise ConfigError(f"{what}: the ranks saved different keys ({odd[:5]} not on every rank)")
    for key, entry in merged.items():
        if entry["kind"] == "tensor":
            _check_cover(key, entry, f"{what}: the ranks' pieces of")
    return merged


def written(files, merged):
    """A rank's files cut to the chunks the merged index names (a replicated chunk is written by one rank)."""
    named = {(c["file"], c["name"]) for e in merged.values() if e["kind"] == "tensor" for c in e["chunks"]}
    kept = {f: {n: a for n, a in arrays.items() if (f, n) in named} for f, arrays in files.items()}
    return {f: arrays for f, arrays in kept.items() if arrays}


def _describe(entry):
    if entry["kind"] == "object":
        return "an object"
    return f"a tensor of shape {tuple(entry['shape'])}, {entry['dtype']}"


def _check_cover(key, entry, what):
    """The chunks tile [0, numel) exactly, without gaps or overlaps."""
    numel, end = int(np.prod(entry["shape"])), 0
    for chunk in sorted(entry["chunks"], key=lambda c: c["offset"]):
        if chunk["offset"] != end:
            gap = "overlap" if chunk["offset"] < end else "leave a gap"
            raise ShapeError(f"{what} {key!r} {gap} at element {min(end, chunk['offset'])} of {numel}")
        end += chunk["numel"]
    if end != numel:
        raise ShapeError(f"{what} {key!r} cover {end} of its {numel} elements")


def overlaps(start, stop, runs):
    """For each run (offset, numel, payload) that overlaps elements [start, stop): (lo, hi, payload), the
    overlap in the tensor's flattened elements — the one rule `fill` and FSDP's `write_block` cut by."""
    for offset, numel, payload in runs:
        lo, hi = max(start, offset), min(stop, offset + numel)
        if hi > lo:
            yield lo, hi, payload


def fill(dest, start, entry, read):
    """dest (a 1-d array) ← elements [start, start + len(dest)) of the entry's tensor, from its chunks
    (`read(chunk)` → the chunk's 1-d array)."""
    runs = [(c["offset"], c["numel"], c) for c in entry["chunks"]]
    for lo, hi, chunk in overlaps(start, start + dest.shape[0], runs):
        part = read(chunk)[lo - chunk["offset"] : hi - chunk["offset"]]
        dest[lo - start : hi - start] = namespace(dest).asarray(part)  # (a cupy tensor: from host chunks)


def validate(meta, source):
    """A loaded .metadata → its entries, or a FileFormatError naming the folder and what is wrong."""
    if not isinstance(meta, dict) or meta.get("version") != VERSION or not isinstance(meta.get("entries"), dict):
        raise FileFormatError(f"{source}: its {METADATA} is not a distgraph checkpoint index (version {VERSION})")
    for key, entry in meta["entries"].items():
        if not isinstance(entry, dict) or entry.get("kind") not in ("tensor", "object"):
            raise FileFormatError(f"{source}: {METADATA} entry {key!r} is damaged")
        if entry["kind"] == "tensor":
            named = [c.get("file") for c in entry.get("chunks", ())]
            if not all(isinstance(f, str) and DATA_FILE.fullmatch(f) for f in named):  # (never a path elsewhere)
                raise FileFormatError(
                    f"{source}: {METADATA} entry {key!r} names a data file {named} not of this checkpoint"
                )
            try:
                _check_cover(key, entry, f"{source}: the chunks of")
            except (ShapeError, KeyError, TypeError) as exc:
                raise FileFormatError(f"{source}: {METADATA} entry {key!r} is damaged ({exc})") from None
    return meta["entries"]
