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

from dataclasses import dataclass

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError


@dataclass
class StateDictOptions:
    full_state_dict: bool = False
    cpu_offload: bool = False
    strict: bool = True


def _fsdp():
    from distgraph.distributed import fsdp

    return fsdp


def _plain(model):
    """DDP's wrapped module (its names are the plain model's); FSDP and plain models as they are."""
    from distgraph.distributed.ddp import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _is_fsdp(model):
    return isinstance(model, _fsdp().FullyShardedDataParallel)


def _fsdp_settings(model, options):
    f = _fsdp()
    if options.full_state_dict:
        return (f.StateDictType.FULL_STATE_DICT, f.FullStateDictConfig(offload_to_cpu=options.cpu_offload),
                f.FullOptimStateDictConfig(offload_to_cpu=options.cpu_offload))  # fmt: skip
    return (f.StateDictType.SHARDED_STATE_DICT, f.ShardedStateDictConfig(offload_to_cpu=options.cpu_offload),
            f.ShardedOptimStateDictConfig(offload_to_cpu=options.cpu_offload))  # fmt: skip


def _optimizers(optimizers):
    return list(optimizers) if isinstance(optimizers, list | tuple) else [optimizers]


def get_model_state_dict(model, *, options=None):
    options = options or StateDictOptions()
    if _is_fsdp(model):
        with _fsdp().FullyShardedDataParallel.state_dict_type(model, *_fsdp_settings(model, options)):
            return model.state_dict()
    out = _plain(model).state_dict()
    return {k: Tensor(v.array.copy()).cpu() for k, v in out.items()} if options.cpu_offload else out


def get_optimizer_state_dict(model, optimizers, *, options=None):
    """Every optimizer's state by parameter name; several optimizers' groups one after another (torch's)."""
    options = options or StateDictOptions()
    state, groups = {}, []
    for optim in _optimizers(optimizers):
        init_optim_state(optim)
        if _is_fsdp(model):
            with _fsdp().FullyShardedDataParallel.state_dict_type(model, *_fsdp_settings(model, options)):
                osd = _fsdp().FullyShardedDataParallel.optim_state_dict(model, optim)
        else:
            osd = _by_name(_plain(model), optim)
        state.update(osd["state"])
        groups += osd["param_groups"]
    return {"state": state, "param_groups": groups}


def get_state_dict(model, optimizers, *, options=None):
    """→ (model state dict, optimizer state dict)."""
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizers, options=options)


def set_model_state_dict(model, model_state_dict, *, options=None):
    """→ (missing keys, unexpected keys), as load_state_dict."""
    options = options or StateDictOptions()
    if _is_fsdp(model):
        with _fsdp().FullyShardedDataParallel.state_dict_type(model, *_fsdp_settings(model, options)):
            return model.load_state_dict(model_state_dict, strict=options.strict)
    return _plain(model).load_state_dict(model_state_dict, strict=options.strict)


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    options = options or StateDictOptions()
    groups = list(optim_state_dict["param_groups"])
    for optim in _optimizers(optimizers):
        mine, groups = groups[: len(optim.param_groups)], groups[len(optim.param_groups) :]
        names = {n for g in mine for n in g["params"]}
        osd = {"state": {n: s for n, s in optim_state_dict["state"].items() if n in names}, "param_groups": mine}
        if _is_fsdp(model):
            with _fsdp().FullyShardedDataParallel.state_dict_type(model, *_fsdp_settings(model, options)):
                optim.load_state_dict(_fsdp().FullyShardedDataParallel.optim_state_dict_to_load(model, optim, osd))
        else:
            optim.load_state_dict(_by_index(_plain(model), optim, osd))
    if groups:
        raise ConfigError(f"set_optimizer_state_dict: {len(groups)} param group(s) left over for no optimizer")


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    keys = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return keys


def init_optim_state(optim):
    """An optimizer that has not stepped and holds no gradients: its state made by one step with zero
    gradients at lr 0 (torch's `_init_optim_state`: the parameters do not move), the gradients then dropped."""
    if optim.state:  # (stepped: a stateless SGD holds {} per parameter then)
        return
    if any(p.grad is not None for g in optim.param_groups for p in g["params"]):
        return  # (gradients the step to come needs: never zeroed here, as torch's)
    lrs = [g.get("lr") for g in optim.param_groups]
    with no_grad():
        for g in optim.param_groups:
            if "lr" in g:
                g["lr"] = 0.0
            for p in g["params"]:
                if p.requires_grad and p.grad is None:
                    p.grad = Tensor(p.device.xp.zeros_like(p.array), device=p.device)
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
