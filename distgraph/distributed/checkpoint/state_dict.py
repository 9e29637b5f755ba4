"""torch.distributed.checkpoint.state_dict: one way to get and set a model's and its optimizers' state dicts,
whether the model is plain, DistributedDataParallel or FullyShardedDataParallel — the dicts `dcp.save` and
`dcp.load` take.

    model_sd, optim_sd = get_state_dict(model, opt)                  # FSDP: each rank's pieces
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    ...
    model_sd, optim_sd = get_state_dict(model, opt)                  # the structure to load into
    dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd)

Keys are the plain model's parameter names (DDP's `module.` dropped), for the model and for the optimizer's
state alike (`{"state": {name: {...}}, "param_groups": [{..., "params": [names]}]}`), so a checkpoint moves
between a plain model, DDP and FSDP of any world size. An optimizer that has not stepped yet is given its state
first (one step with zero gradients and lr 0, torch's `_init_optim_state`), so that the dict to load into has
every entry. `StateDictOptions(full_state_dict=True)` gives FSDP's full dicts instead (`cpu_offload`: on the CPU).
"""

import contextlib
from dataclasses import dataclass

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.nn.module import StateDictError
from distgraph.ops.creation import zeros_like


@dataclass
class StateDictOptions:
    """torch's options. `ignore_frozen_params`: the model's dict leaves out parameters that do not require
    grad. `broadcast_from_rank0` (with full_state_dict, for the set_ functions): only rank 0's dicts are read,
    sent to the other ranks first. Offered as torch's defaults only: `keep_submodule_prefixes=True` and
    `flatten_optimizer_state_dict=False`."""

    full_state_dict: bool = False
    cpu_offload: bool = False
    ignore_frozen_params: bool = False
    keep_submodule_prefixes: bool = True
    strict: bool = True
    broadcast_from_rank0: bool = False
    flatten_optimizer_state_dict: bool = False

    def __post_init__(self):
        if not self.keep_submodule_prefixes or self.flatten_optimizer_state_dict:
            raise ConfigError(
                "StateDictOptions: keep_submodule_prefixes=False and flatten_optimizer_state_dict=True are not "
                "supported"
            )
        if self.broadcast_from_rank0 and not self.full_state_dict:
            raise ConfigError("StateDictOptions: broadcast_from_rank0 needs full_state_dict=True (torch's rule)")


def _fsdp():
    from distgraph.distributed import fsdp

    return fsdp


def _plain(model):
    """DDP's wrapped module (its names are the plain model's); FSDP and plain models as they are."""
    from distgraph.distributed.ddp import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _is_fsdp(model):
    return isinstance(model, _fsdp().FullyShardedDataParallel)


def _kind(model, options):
    """Inside it an FSDP model's state dicts are the options' kind (full or sharded); other models: as they are."""
    if not _is_fsdp(model):
        return contextlib.nullcontext()
    f, offload = _fsdp(), options.cpu_offload
    if options.full_state_dict:  # torch's: offloaded full dicts are rank 0's only (and with broadcast_from_rank0)
        configs = (f.StateDictType.FULL_STATE_DICT, f.FullStateDictConfig(offload_to_cpu=offload, rank0_only=offload),
                   f.FullOptimStateDictConfig(offload_to_cpu=offload,
                                              rank0_only=offload or options.broadcast_from_rank0))  # fmt: skip
    else:
        configs = (f.StateDictType.SHARDED_STATE_DICT, f.ShardedStateDictConfig(offload_to_cpu=offload),
                   f.ShardedOptimStateDictConfig(offload_to_cpu=offload))  # fmt: skip
    return f.FullyShardedDataParallel.state_dict_type(model, *configs)


def _rank0_only(options):
    """A model not FSDP: torch's full dicts offloaded to the cpu are rank 0's, {} on the others (a launch's)."""
    from distgraph.distributed import loop

    return options.full_state_dict and options.cpu_offload and loop.is_launched() and loop.rank() != 0


def _optimizers(optimizers):
    return list(optimizers) if isinstance(optimizers, list | tuple) else [optimizers]


def get_model_state_dict(model, *, options=None):
    options = options or StateDictOptions()
    if not _is_fsdp(model) and _rank0_only(options):
        return {}
    with _kind(model, options):
        out = _plain(model).state_dict()
    if options.cpu_offload and not _is_fsdp(model):  # (FSDP's own config offloads)
        out = {k: Tensor(v.array.copy()).cpu() for k, v in out.items()}
    if options.ignore_frozen_params:
        frozen = _frozen(model)
        out = {k: v for k, v in out.items() if k not in frozen}
    return out


def _frozen(model):
    """The names of the parameters that do not require grad (FSDP's by the plain model's names)."""
    if _is_fsdp(model):
        from distgraph.distributed.fsdp_wrap import resolve

        return {k for k, e in model._entries if e[2] == "param" and not resolve(e).requires_grad}
    return {n for n, p in _plain(model).named_parameters() if not p.requires_grad}


def get_optimizer_state_dict(model, optimizers, *, options=None):
    """Every optimizer's state by parameter name; several optimizers' groups one after another (torch's). An
    FSDP full dict kept on rank 0: the other ranks make every optimizer's too (each a collective), then get {}."""
    options = options or StateDictOptions()
    if not _is_fsdp(model) and _rank0_only(options):
        return {}
    optimizers = _optimizers(optimizers)
    if _is_fsdp(model):  # (before init_optim_state steps one)
        from distgraph.distributed.fsdp_optim import refuse_whole_parameter

        for optim in optimizers:
            refuse_whole_parameter(optim, "get_optimizer_state_dict")
    state, groups, kept = {}, [], True
    for optim in optimizers:  # (each optimizer's FSDP dict is a collective: every rank makes every one)
        init_optim_state(optim)
        with _kind(model, options):
            osd = _fsdp().FSDP.optim_state_dict(model, optim) if _is_fsdp(model) else _by_name(_plain(model), optim)
        if not osd:  # an FSDP full dict kept on rank 0 only: {} elsewhere, as torch's
            kept = False
            continue
        state.update(osd["state"])
        groups += osd["param_groups"]
    return {"state": state, "param_groups": groups} if kept else {}


def get_state_dict(model, optimizers, *, options=None):
    """→ (model state dict, optimizer state dict)."""
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizers, options=options)


def set_model_state_dict(model, model_state_dict, *, options=None):
    """→ (missing keys, unexpected keys), as load_state_dict."""
    options = options or StateDictOptions()
    model_state_dict = _from_rank0(model_state_dict, options)
    strict = options.strict and not options.ignore_frozen_params  # (frozen ones may be missing: checked below)
    with _kind(model, options):
        keys = _plain(model).load_state_dict(model_state_dict, strict=strict)
    if options.strict and options.ignore_frozen_params:
        frozen = _frozen(model)
        missing = [k for k in keys.missing_keys if k not in frozen]
        if missing or keys.unexpected_keys:
            raise StateDictError(
                f"set_model_state_dict: missing key(s) {missing}, unexpected key(s) {keys.unexpected_keys} "
                "(frozen parameters may be missing with ignore_frozen_params)"
            )
    return keys


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    options = options or StateDictOptions()
    optim_state_dict = _from_rank0(optim_state_dict, options)
    groups = list(optim_state_dict["param_groups"])
    for optim in _optimizers(optimizers):
        mine, groups = groups[: len(optim.param_groups)], groups[len(optim.param_groups) :]
        names = {n for g in mine for n in g["params"]}
        osd = {"state": {n: s for n, s in optim_state_dict["state"].items() if n in names}, "param_groups": mine}
        with _kind(model, options):
            if _is_fsdp(model):
                optim.load_state_dict(_fsdp().FSDP.optim_state_dict_to_load(model, optim, osd))
            else:
                optim.load_state_dict(_by_index(_plain(model), optim, osd))
    if groups:
        raise ConfigError(f"set_optimizer_state_dict: {len(groups)} param group(s) left over for no optimizer")


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    keys = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return keys


def _from_rank0(state_dict, options):
    """With `broadcast_from_rank0`: rank 0's dict on every rank (the others may pass an empty one)."""
    if not options.broadcast_from_rank0:
        return state_dict
    from distgraph.distributed import loop

    return loop.broadcast_object(state_dict if loop.rank() == 0 else None, 0)


def init_optim_state(optim):
    """An optimizer that has not stepped and holds no gradients: its state made by one step with zero
    gradients at lr 0 (torch's `_init_optim_state`: the parameters do not move), the gradients then dropped.
    A ZeroRedundancyOptimizer is left as it is: its state is its local optimizer's (its own `state` stays
    empty), its step a collective, and its `state_dict()` the one `consolidate_state_dict` gathered."""
    from distgraph.distributed.optim.zero_redundancy import ZeroRedundancyOptimizer

    if optim.state or isinstance(optim, ZeroRedundancyOptimizer):  # (stepped: a stateless SGD holds {} per
        return  # parameter then)
    if any(p.grad is not None for g in optim.param_groups for p in g["params"]):
        return  # (gradients the step to come needs: never zeroed here, as torch's)
    lrs = [g.get("lr") for g in optim.param_groups]
    with no_grad():
        for g in optim.param_groups:
            if "lr" in g:
                g["lr"] = 0.0
            for p in g["params"]:
                if p.requires_grad and p.grad is None:
                    p.grad = zeros_like(p)  # (on the parameter's device and GPU)
        try:
            optim.step()
        finally:
            for g, lr in zip(optim.param_groups, lrs):
                if lr is not None:
                    g["lr"] = lr
            optim.zero_grad(set_to_none=True)


def _names(model, optim):
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for g in optim.param_groups:
        for p in g["params"]:
            if id(p) not in by_id:
                raise ConfigError(
                    f"get_optimizer_state_dict: the optimizer holds a parameter of shape {tuple(p.shape)} that is no "
                    "parameter of the model"
                )
            names.append(by_id[id(p)])
    return names


def _by_name(model, optim):
    """The optimizer's state_dict with parameter names in place of indices."""
    names, osd = _names(model, optim), optim.state_dict()
    groups = [dict(g, params=[names[i] for i in g["params"]]) for g in osd["param_groups"]]
    return {"state": {names[i]: s for i, s in osd["state"].items()}, "param_groups": groups}


def _by_index(model, optim, osd):
    index = {n: i for i, n in enumerate(_names(model, optim))}
    unknown = sorted(n for g in osd["param_groups"] for n in g["params"] if n not in index)
    if unknown:
        raise ConfigError(f"set_optimizer_state_dict: the state dict names parameters the model lacks: {unknown[:5]}")
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in osd["param_groups"]]
    return {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups}
