"""FSDP's optimizer state dicts, torch's FULL_STATE_DICT form: an optimizer over the flat shards saved as
one over the plain model's parameters, keyed by their names, and loaded back.

`optim_state_dict(model, optim)` (a collective: every rank gets the whole dict): each per-element entry of a
flat shard's state (Adam's exp_avg, ...: an array of the shard's shape) is gathered into the unit's full flat
array and cut into its parameters' shapes; other entries (the step) go to each of its parameters as they are;
`param_groups` list parameter names. `optim_state_dict_to_load(model, optim, osd)`: such a dict — from this
function, or from a plain model's optimizer re-keyed by names — → what `optim.load_state_dict` takes on this
rank, each entry flattened as the unit's parameters and cut to the rank's block.
"""

import numpy as np

from distgraph.backend import to_device
from distgraph.distributed import loop
from distgraph.errors import ConfigError


def _flat_params(model, optim):
    """(group index, position in the optimizer's numbering, handle, the parameters' names) per flat parameter."""
    from distgraph.distributed.fsdp import _units

    handles = {id(u._handle.flat): u._handle for u in _units(model) if u._handle is not None}
    names = {}
    for key, (module, name, kind) in model._entries:
        if kind == "param":
            names.setdefault(id(getattr(module, name)), key)  # a tied parameter by its first name
    out, index = [], 0
    for g, group in enumerate(optim.param_groups):
        for p in group["params"]:
            handle = handles.get(id(p))
            if handle is None:
                raise ConfigError(
                    f"FSDP.optim_state_dict: the optimizer holds a parameter of shape {tuple(p.shape)} that is no "
                    "flat parameter of this FSDP model (build the optimizer on model.parameters())"
                )
            out.append((g, index, handle, [names[id(q)] for q in handle.params]))
            index += 1
    return out


def optim_state_dict(model, optim, config):
    """(`config`: FullOptimStateDictConfig — rank0_only: the others get {}; offload_to_cpu: numpy arrays.)"""
    saved = optim.state_dict()
    state, groups = {}, [{k: v for k, v in g.items() if k != "params"} | {"params": []} for g in saved["param_groups"]]
    for g, index, handle, names in _flat_params(model, optim):
        groups[g]["params"] += names
        entries = saved["state"].get(index)
        if entries is None:
            continue
        per_param = {n: {} for n in names}
        for key, value in entries.items():
            if getattr(value, "shape", None) == (handle.shard_size,):
                for n, piece in zip(names, handle.split(handle.gather(value))):  # (every rank: a collective)
                    per_param[n][key] = (to_device(piece, "cpu") if config.offload_to_cpu else piece).copy()
            else:
                for n in names:
                    per_param[n][key] = value
        state.update(per_param)
    if config.rank0_only and loop.rank() != 0:
        return {}
    return {"state": state, "param_groups": groups}


def optim_state_dict_to_load(model, optim, optim_state_dict, config):
    """(`config.rank0_only`: the dict is rank 0's, sent to the others first.)"""
    if config.rank0_only and loop.world_size() > 1:
        optim_state_dict = loop.broadcast_object(optim_state_dict if loop.rank() == 0 else None, 0)
    flats = _flat_params(model, optim)
    saved_groups = optim_state_dict["param_groups"]
    if len(saved_groups) != len(optim.param_groups):
        raise ConfigError(
            f"FSDP.optim_state_dict_to_load: the state dict has {len(saved_groups)} param groups, the optimizer "
            f"{len(optim.param_groups)}"
        )
    state, groups = {}, [{k: v for k, v in g.items() if k != "params"} | {"params": []} for g in saved_groups]
    for g, index, handle, names in flats:
        groups[g]["params"].append(index)
        entries = [optim_state_dict["state"].get(n) for n in names]
        if all(e is None for e in entries):
            continue
        missing = [n for n, e in zip(names, entries) if e is None]
        if missing:
            raise ConfigError(
                f"FSDP.optim_state_dict_to_load: no state for {missing}, though there is for others of their unit {names}"
            )
        loaded = {}
        for key, first in entries[0].items():
            if getattr(first, "shape", None) == handle.shapes[0]:  # per element: flattened, this rank's block
                loaded[key] = handle.block_of([np.asarray(getattr(e[key], "array", e[key])) for e in entries])
            else:
                loaded[key] = first
        state[index] = loaded
    return {"state": state, "param_groups": groups}
