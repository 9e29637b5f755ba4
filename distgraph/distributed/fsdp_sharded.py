"""FSDP's SHARDED_STATE_DICT: each rank's pieces of the parameters, by the plain model's names, for `dcp.save`
and `dcp.load` (distributed/checkpoint/) — and loaded back into the flat shards.

    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        dcp.save({"model": model.state_dict()}, checkpoint_id=path)

A unit split over the ranks gives each of its parameters as a ShardedTensor holding this rank's piece (a run
of the flattened parameter: what its block of the flat array holds, copied); nothing is gathered, so saving
costs each rank only what it keeps. A NO_SHARD unit's parameters and every buffer are whole on every rank and
given as plain tensors (`dcp.save` writes those once). Loading writes into each rank's block whatever part
of it a value holds: a ShardedTensor `dcp.load` filled for this model (from a checkpoint of any world size)
or a full tensor.
"""

from collections import OrderedDict

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.distributed import fsdp_mixed
from distgraph.distributed.fsdp_wrap import resolve
from distgraph.nn.module_state import StateDictError, _IncompatibleKeys, key_errors, size_mismatch


def _units_with_params(model):
    from distgraph.distributed.fsdp import _units

    return [u._handle for u in _units(model) if u._handle is not None]


def sharded_state_dict(model, out=None, prefix="", offload=False):
    out = OrderedDict() if out is None else out
    values = {}
    for h in _units_with_params(model):
        values.update(zip(map(id, h.params), h.sharded(h.flat.array, offload)))
    for key, entry in model._entries:
        t = resolve(entry)
        value = values.get(id(t))
        if value is None:  # a buffer
            value = Tensor(fsdp_mixed.saved(model, entry, t.array), device=t.device)
            value = Tensor(to_device(value.array, "cpu")) if offload else value
        out[prefix + key] = value
    return out


def check_state_dict(model, state_dict, strict):
    """(missing, unexpected) of a full or sharded state dict against the model's entries, every key's shape
    checked against its parameter's own (emptied at rest) — or torch's StateDictError, before anything is
    written."""
    optional = {k for k, (module, name, _) in model._entries if name in module._optional_state}
    missing, unexpected, errors = key_errors([k for k, _ in model._entries], state_dict, strict, optional)
    shapes = {id(p): shape for h in _units_with_params(model) for p, shape in zip(h.params, h.shapes)}
    for key, entry in model._entries:
        if key in state_dict:
            v, t = state_dict[key], resolve(entry)
            shape, want = tuple(v.shape) if hasattr(v, "shape") else np.shape(v), shapes.get(id(t), tuple(t.shape))
            if shape != want:
                errors.append(size_mismatch(key, shape, want))
    if errors:
        raise StateDictError("Error(s) in loading state_dict for FullyShardedDataParallel:\n\t" + "\n\t".join(errors))
    return missing, unexpected


def assign(t, value):
    """A tensor's values ← a state dict's (a tensor or an array; cast to its dtype, onto its device)."""
    t.array[...] = t.device.xp.asarray(value.array if isinstance(value, Tensor) else value, dtype=t.array.dtype)


def load_sharded_state_dict(model, state_dict, strict=True):
    """→ (missing, unexpected); every key's shape checked before anything is written."""
    missing, unexpected = check_state_dict(model, state_dict, strict)
    handles = _units_with_params(model)
    name_of = {}  # (a tied parameter by the first of its names the dict holds: strict=False may leave one out)
    for key, entry in model._entries:
        pid = id(resolve(entry))
        if pid not in name_of or (name_of[pid] not in state_dict and key in state_dict):
            name_of[pid] = key
    in_units = {id(p) for h in handles for p in h.params}
    with no_grad():
        for h in handles:
            names = [name_of[id(p)] for p in h.params]
            h.write_block(h.flat.array, [state_dict.get(n) for n in names], names, "FSDP.load_state_dict")
            if h.unsharded:  # (gathered by a forward whose backward is to come: the new values there too)
                h.unshard(fresh=True)
        for key, entry in model._entries:
            t = resolve(entry)
            if id(t) not in in_units and key in state_dict:  # a buffer
                assign(t, state_dict[key])
    return _IncompatibleKeys(missing, unexpected)
