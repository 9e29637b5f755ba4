"""FSDP's optimizer state dicts, torch's FULL_STATE_DICT form: an optimizer over the flat shards saved as
one over the plain model's parameters, keyed by their names, and loaded back.

`optim_state_dict(model, optim)` (a collective: every rank gets the whole dict): each per-element entry of a
flat shard's state (Adam's exp_avg, ...: an array of the shard's shape) is gathered into the unit's full flat
array and cut into its parameters' shapes; other entries (the step) go to each of its parameters as they are —
with use_orig_params each parameter's own (a unit's parameters may have stepped unlike: progressive
unfreezing), told by a rank holding a piece of it (a rank without one has no state for it, as torch's: the
ranks tell each other what they hold first); `param_groups` list parameter names.
`optim_state_dict_to_load(model, optim, osd)`: such a dict — from this function, or from a plain model's
optimizer re-keyed by names — → what `optim.load_state_dict` takes on this rank, each entry flattened as the
unit's parameters and cut to the rank's block; with use_orig_params each parameter keeps its own other
entries, while a flat parameter keeps one of each, so its parameters' must agree (else a ConfigError naming
them, as torch raises). Optimizers whose update reads a parameter's shape (Adafactor, Muon) are refused: they
would step the flat shards and 1-d pieces as if those were the parameters.
"""

import numpy as np

from distgraph.backend import to_device, to_host
from distgraph.distributed import loop
from distgraph.distributed.checkpoint.sharded import ShardedTensor
from distgraph.errors import ConfigError
from distgraph.optim.functional_matrix import WHOLE_PARAMETER


def refuse_whole_parameter(optim, what):
    """A ConfigError for an optimizer whose update needs each parameter whole (zero.py's sharded store refuses
    them too): FSDP's optimizer steps 1-d runs of the parameters (flat shards; with use_orig_params, pieces)."""
    if getattr(optim, "update_name", None) in WHOLE_PARAMETER:
        raise ConfigError(
            f"{what}: {type(optim).__name__}'s update needs each parameter whole (its matrix shape), and FSDP's "
            "optimizer steps 1-d runs of them (flat shards; with use_orig_params, each rank's pieces); use an "
            "elementwise optimizer (SGD, Adam, ...) or DistributedDataParallel"
        )


def _layout(model, optim):
    """The optimizer's parameters as units: → ([(group, index, the names it stands for)] in the optimizer's
    order, [(handle, its names, [(optimizer index or None, piece)] per member)] in the units' order — a member
    is the flat parameter, or with use_orig_params each parameter and its piece of the rank's block)."""
    from distgraph.distributed.fsdp import _units

    names = {}
    for key, (module, name, kind) in model._entries:
        if kind == "param":
            names.setdefault(id(getattr(module, name)), key)  # a tied parameter by its first name
    handles = [u._handle for u in _units(model) if u._handle is not None]
    stands_for = {id(h.flat): [names[id(q)] for q in h.params] for h in handles if not h.orig}
    stands_for.update({id(q): [names[id(q)]] for h in handles if h.orig for q in h.params})
    held, index = [], {}
    for g, group in enumerate(optim.param_groups):
        for p in group["params"]:
            if id(p) not in stands_for:
                raise ConfigError(
                    f"FSDP.optim_state_dict: the optimizer holds a parameter of shape {tuple(p.shape)} that is no "
                    "parameter of this FSDP model (build the optimizer on model.parameters())"
                )
            index[id(p)] = len(held)
            held.append((g, len(held), stands_for[id(p)]))
    units = []
    for h in handles:
        members = (
            [(index.get(id(q)), piece) for q, piece in zip(h.params, h.pieces)]
            if h.orig
            else [(index.get(id(h.flat)), None)]
        )
        if any(i is not None for i, _ in members):
            units.append((h, [names[id(q)] for q in h.params], members))
    return held, units


def _groups(saved_groups, held, entry):
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": []} for g in saved_groups]
    for g, index, names in held:
        groups[g]["params"] += entry(index, names)
    return groups


def optim_state_dict(model, optim, config):
    """(`config`: FullOptimStateDictConfig — rank0_only: the others get {}; offload_to_cpu: numpy arrays — or
    ShardedOptimStateDictConfig: each per-element entry a ShardedTensor of this rank's piece, nothing gathered.)"""
    from distgraph.distributed.fsdp import FullOptimStateDictConfig

    refuse_whole_parameter(optim, "FSDP.optim_state_dict")
    offload = config.offload_to_cpu

    def parts(handle, block):  # a block of the unit's flat state → one value per parameter
        if not isinstance(config, FullOptimStateDictConfig):
            return handle.sharded(block, offload)
        return [(to_device(a, "cpu") if offload else a).copy() for a in handle.split(handle.gather(block))]

    saved = optim.state_dict()
    held, units = _layout(model, optim)
    state = {}
    for (handle, names, members), told in zip(units, _told_state(model, units, saved["state"])):
        entries = [None if i is None else saved["state"].get(i) for i, _ in members]
        if handle.orig:
            state.update(_orig_params_state(handle, names, entries, told, parts))
        elif entries[0] is not None:  # (a flat parameter: its state's per-element entries are blocks, cut up;
            for key, value in entries[0].items():  # the others, its one step, go to each of its parameters)
                per_element = getattr(value, "shape", None) == (handle.shard_size,)
                for n, part in zip(names, parts(handle, value) if per_element else [value] * len(names)):
                    state.setdefault(n, {})[key] = part
    if getattr(config, "rank0_only", False) and not model._groups.is_rank_0:
        return {}
    return {"state": state, "param_groups": _groups(saved["param_groups"], held, lambda _, names: names)}


def _told_state(model, units, state):
    """For each use_orig_params unit, for each parameter: what the optimizer holds for it — None, or {key:
    ("element", dtype) for an entry of one number per element of its piece, else ("value", the entry)} — as
    the first rank holding a piece of it and state for it tells (a collective over the shard group, once for
    all units: every rank then gathers the same entries). Flat units: None (every rank steps its block)."""
    mine = []
    for handle, _, members in units:
        told = None
        if handle.orig:
            told = []
            for j, (i, (lo, hi)) in enumerate(members):
                entry = state.get(i) if i is not None and handle.holds(j) else None
                told.append(None if entry is None else {k: _kind(v, hi - lo) for k, v in entry.items()})
        mine.append(told)
    if all(told is None for told in mine):
        return mine
    ranks = model._groups.in_shard(loop.allgather_object, mine)

    def first(u, j):
        return next((r[u][j] for r in ranks if r[u][j] is not None), None)

    return [None if told is None else [first(u, j) for j in range(len(told))] for u, told in enumerate(mine)]


def _kind(value, n):
    if getattr(value, "shape", None) == (n,):
        return "element", str(value.dtype)
    return "value", value


def _orig_params_state(handle, names, entries, told, parts):
    """A use_orig_params unit's state by parameter name: each per-element entry gathered from the ranks' pieces
    (zeros where a parameter has none of it), every other entry the parameter's own."""
    gathered = {}
    for key, dtype in {k: v for t in told if t for k, (kind, v) in t.items() if kind == "element"}.items():
        block = handle.xp.zeros(handle.shard_size, np.dtype(dtype))
        for j, (entry, (lo, hi)) in enumerate(zip(entries, handle.pieces)):
            if entry is not None and handle.holds(j) and key in entry:
                block[lo:hi] = entry[key]
        gathered[key] = parts(handle, block)  # (every rank, for the same keys in one order: a collective)
    return {
        n: {key: gathered[key][j] if kind == "element" else value for key, (kind, value) in t.items()}
        for j, (n, t) in enumerate(zip(names, told))
        if t is not None
    }


def optim_state_dict_to_load(model, optim, optim_state_dict, config):
    """(`config.rank0_only`: the dict is rank 0's, sent to the others first. Per-element entries may be full
    arrays or ShardedTensors (a sharded dict `dcp.load` filled).)"""
    refuse_whole_parameter(optim, "FSDP.optim_state_dict_to_load")
    if getattr(config, "rank0_only", False):
        groups = model._groups
        optim_state_dict = groups.broadcast_object(optim_state_dict if groups.is_first else None)
    held, units = _layout(model, optim)
    saved_groups = optim_state_dict["param_groups"]
    if len(saved_groups) != len(optim.param_groups):
        raise ConfigError(
            f"FSDP.optim_state_dict_to_load: the state dict has {len(saved_groups)} param groups, the optimizer "
            f"{len(optim.param_groups)}"
        )
    state = {}
    for handle, names, members in units:
        held_names = (
            names
            if not handle.orig
            else [  # (a frozen one has no state to load: _told_state leaves it out)
                n for n, (i, _), p in zip(names, members, handle.params) if i is not None and p.requires_grad
            ]
        )
        entries = {n: optim_state_dict["state"].get(n) for n in held_names}
        if all(e is None for e in entries.values()):
            continue
        missing = [n for n, e in entries.items() if e is None]
        if missing:
            raise ConfigError(
                f"FSDP.optim_state_dict_to_load: no state for {missing}, though there is for others of their unit {names}"
            )
        blocks = _blocks(handle, names, entries)
        if handle.orig:  # each parameter its piece of the blocks and its own other entries; none without a piece
            for j, ((index, (lo, hi)), n, shape) in enumerate(zip(members, names, handle.shapes)):
                if n in entries and handle.holds(j):
                    state[index] = {
                        k: blocks[k][lo:hi].copy() if _per_element(v, shape) else v for k, v in entries[n].items()
                    }
        else:
            state[members[0][0]] = {k: blocks.get(k, v) for k, v in _one_of_each(names, entries, blocks).items()}
    return {"state": state, "param_groups": _groups(saved_groups, held, lambda index, _: [index])}


def _blocks(handle, names, entries):
    """{key: this rank's block} of each entry holding one number per element of its parameter (a full array or a
    ShardedTensor), flattened as the unit's parameters (zeros where a parameter has none)."""
    shapes, blocks = dict(zip(names, handle.shapes)), {}
    for key in dict.fromkeys(k for e in entries.values() for k in e):
        values = [
            entries[n][key] if n in entries and key in entries[n] and _per_element(entries[n][key], shapes[n]) else None
            for n in names
        ]
        first = next((v for v in values if v is not None), None)
        if first is not None:
            dtype = first.dtype if isinstance(first, ShardedTensor) else getattr(first, "array", first).dtype
            blocks[key] = handle.write_block(
                handle.xp.zeros(handle.shard_size, dtype), values, names, "FSDP.optim_state_dict_to_load"
            )
    return blocks


def _per_element(value, shape):
    return getattr(value, "shape", None) is not None and tuple(value.shape) == shape


def _one_of_each(names, entries, blocks):
    """A flat parameter's entries: the per-element ones as `blocks`; each other one (the step) is one value for
    the whole unit, so its parameters' must agree (torch raises too)."""
    out = {}
    for key in dict.fromkeys(k for e in entries.values() for k in e):
        values = {n: entries[n].get(key) for n in names}
        first = values[names[0]]
        if key not in blocks and not all(np.array_equal(to_host(v), to_host(first)) for v in values.values()):
            raise ConfigError(
                f"FSDP.optim_state_dict_to_load: the parameters of one flat unit hold different {key!r}: {values}; "
                "a flat parameter (use_orig_params=False) keeps one for all of them (use_orig_params=True keeps "
                "each parameter's own)"
            )
        out[key] = first
    return out
