"""FSDP's optimizer state dicts, torch's FULL_STATE_DICT form: an optimizer over the flat shards saved as
one over the plain model's parameters, keyed by their names, and loaded back.

`optim_state_dict(model, optim)` (a collective: every rank gets the whole dict): each per-element entry of a
flat shard's state (Adam's exp_avg, ...: an array of the shard's shape) is gathered into the unit's full flat
array and cut into its parameters' shapes; other entries (the step) go to each of its parameters as they are;
`param_groups` list parameter names. `optim_state_dict_to_load(model, optim, osd)`: such a dict — from this
function, or from a plain model's optimizer re-keyed by names — → what `optim.load_state_dict` takes on this
rank, each entry flattened as the unit's parameters and cut to the rank's block.
"""

from distgraph.backend import to_device
from distgraph.distributed.checkpoint.sharded import ShardedTensor
from distgraph.errors import ConfigError


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

    sharded = not isinstance(config, FullOptimStateDictConfig)
    saved = optim.state_dict()
    held, units = _layout(model, optim)
    state = {}
    for handle, names, members in units:
        entries = [(saved["state"].get(i), piece) for i, piece in members if i is not None]
        if all(e is None for e, _ in entries):
            continue
        per_param = {n: {} for n in _stated(handle, names, members, saved["state"])}
        for key, value in next(e for e, _ in entries if e is not None).items():
            if handle.orig and _per_element(entries, key):
                block = _block_of_pieces(handle, entries, key)
            elif not handle.orig and getattr(value, "shape", None) == (handle.shard_size,):
                block = value
            else:
                block = None
            if block is not None:
                if sharded:
                    parts = handle.sharded(block, config.offload_to_cpu)
                else:  # (every rank: a collective)
                    gathered = handle.split(handle.gather(block))
                    parts = [(to_device(a, "cpu") if config.offload_to_cpu else a).copy() for a in gathered]
                for n, part in zip(names, parts):
                    if n in per_param:
                        per_param[n][key] = part
            else:
                for n in per_param:
                    per_param[n][key] = value
        state.update(per_param)
    if getattr(config, "rank0_only", False) and not model._groups.is_rank_0:
        return {}
    return {"state": state, "param_groups": _groups(saved["param_groups"], held, lambda _, names: names)}


def _stated(handle, names, members, state):
    """The names the optimizer holds state for: a flat parameter's all; with orig params, those of the unit's
    parameters it steps and has stepped (not a frozen one beside them: torch's have none)."""
    if not handle.orig:
        return names
    return [n for n, (i, _) in zip(names, members) if i is not None and state.get(i) is not None]


def _per_element(entries, key):
    """Whether an orig-params state entry holds one number per element of its piece (Adam's moments)."""
    entry, (lo, hi) = next((e, piece) for e, piece in entries if e is not None)
    return getattr(entry[key], "shape", None) == (hi - lo,)


def _block_of_pieces(handle, entries, key):
    first = next(e for e, _ in entries if e is not None)[key]
    block = handle.xp.zeros(handle.shard_size, dtype=first.dtype)
    for entry, (lo, hi) in entries:
        if entry is not None:
            block[lo:hi] = entry[key]
    return block


def optim_state_dict_to_load(model, optim, optim_state_dict, config):
    """(`config.rank0_only`: the dict is rank 0's, sent to the others first. Per-element entries may be full
    arrays or ShardedTensors (a sharded dict `dcp.load` filled).)"""
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
            else [  # (a frozen one has no state to load: _stated leaves it out)
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
        blocks, per_element = {}, set()
        shape = dict(zip(names, handle.shapes))[held_names[0]]
        for key, first in entries[held_names[0]].items():
            if (
                getattr(first, "shape", None) is not None and tuple(first.shape) == shape
            ):  # per element: this rank's block (zeros: not held)
                values = [entries[n][key] if n in entries else None for n in names]
                dtype = first.dtype if isinstance(first, ShardedTensor) else getattr(first, "array", first).dtype
                blocks[key] = handle.write_block(
                    handle.xp.zeros(handle.shard_size, dtype), values, names, "FSDP.optim_state_dict_to_load"
                )
                per_element.add(key)
            else:
                blocks[key] = first
        for index, piece in members:
            if index is not None:  # the flat parameter's state is the block; an orig parameter's its piece
                lo, hi = piece if handle.orig else (0, handle.shard_size)
                state[index] = {k: v[lo:hi].copy() if k in per_element else v for k, v in blocks.items()}
    return {"state": state, "param_groups": _groups(saved_groups, held, lambda index, _: [index])}
