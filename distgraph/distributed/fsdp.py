"""FullyShardedDataParallel: torch's FSDP (its FSDP1 API) inside `dg.distributed.launch`.

    from distgraph.distributed.fsdp import FullyShardedDataParallel as FSDP, ModuleWrapPolicy
    model = FSDP(make_model(), auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    opt = dg.optim.Adam(model.parameters())        # the flat shards: each rank steps its own part
    loss_fn(model(x_shard), y_shard).backward(); opt.step()
    model.state_dict()                              # the full parameters, named as the plain model's

Each unit (the root, and every submodule `auto_wrap_policy` picks, innermost first) keeps its parameters as
one flat array split over the ranks (fsdp_flat.py), so at rest a rank holds 1/world of them and of the
optimizer's state. A unit's forward gathers its parameters first; FULL_SHARD (the default) frees them again
right after and gathers them anew when backward reaches the unit's output (a hook on it); SHARD_GRAD_OP
keeps them until backward ends; NO_SHARD never splits (DDP's arithmetic). When backward ends (one callback,
queued by the first gradient), every unit whose parameters got gradients on some rank averages them over the
ranks (zeros from the others: one small all-reduce counts them) and keeps its block in `flat.grad`, in one order
on every rank; `no_sync()` skips that, the full gradients accumulating in `flat.grad` (where zero_grad clears
them) until the next synced backward.

`use_orig_params=True` (torch's): `parameters()` / `named_parameters()` are the module's own, named as the
plain model's — so optimizer param groups can pick them by name (no weight decay on biases) — each holding at
rest a 1-d view of its piece of this rank's block (empty where none of it is here); the optimizer steps the
pieces in place, and each gets its piece of the reduced gradient. A unit may then mix frozen and trained ones.

`state_dict()` / `load_state_dict()` (torch's FULL_STATE_DICT: names and values as the plain model's, every
rank), `FSDP.optim_state_dict(model, optim)` / `FSDP.optim_state_dict_to_load(model, optim, osd)` (the same for
the optimizer, fsdp_optim.py), `FSDP.summon_full_params(model, writeback=True)`, `clip_grad_norm_(max_norm, norm_type)` (the norm over
every rank's shards), `sync_module_states=True` (rank 0's values everywhere first), `.module`. Every rank must
run the same forwards and backwards (as with torch). Accepted and without effect here, being about overlap on
GPUs: `backward_prefetch`, `forward_prefetch`, `limit_all_gathers`, `device_id`, and `CPUOffload(offload_params=True)`
for a model on the cpu (its shards are in host memory already). Refused by name: parameter offload of a GPU model,
ignored modules, `param_init_fn`.

`process_group=dist.new_group(ranks)` splits and averages over those ranks alone; HYBRID_SHARD (FULL_SHARD
within a shard group, replicated across a replicate group) and _HYBRID_SHARD_ZERO2 (SHARD_GRAD_OP so) take
`process_group=(shard group, replicate group)` or, by default, shard within each node and replicate across
nodes (fsdp_groups.py); `device_mesh=` (device_mesh.py) instead of `process_group`: a 1-d mesh, or for a hybrid
strategy a 2-d one, (replicate, shard), as torch's. A SHARDED_STATE_DICT's replicated pieces are written once (dcp.save keeps the lowest
rank's).

`mixed_precision=MixedPrecision(param_dtype=dg.float16, ...)` (torch's, fsdp_mixed.py): shards and optimizer in
full precision, gathers (low-precision bytes), forward and backward in `param_dtype`, gradients reduced in
`reduce_dtype` and kept in full precision; state dicts and summon_full_params give full-precision values.
"""

import contextlib
import dataclasses
import enum
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from distgraph.autograd.callbacks import current_pass, queue_callback
from distgraph.autograd.grad_mode import is_grad_enabled, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import namespace, to_device
from distgraph.distributed import fsdp_mixed, loop
from distgraph.distributed.fsdp_flat import FlatParamHandle
from distgraph.distributed.fsdp_groups import FSDPGroups
from distgraph.distributed.fsdp_mixed import MixedPrecision  # noqa: F401 - torch's name, importable from here
from distgraph.distributed.fsdp_sharded import assign, check_state_dict, load_sharded_state_dict, sharded_state_dict
from distgraph.distributed.fsdp_wrap import (  # noqa: F401 - torch's names, importable from here too
    ModuleWrapPolicy,
    modules_outside_units,
    own_parameters,
    resolve,
    size_based_auto_wrap_policy,
    state_entries,
    wrap_children,
)
from distgraph.errors import ConfigError
from distgraph.nn.module import Module
from distgraph.nn.module_state import _IncompatibleKeys


class ShardingStrategy(enum.Enum):
    FULL_SHARD = 1
    SHARD_GRAD_OP = 2
    NO_SHARD = 3
    HYBRID_SHARD = 4
    _HYBRID_SHARD_ZERO2 = 5


class BackwardPrefetch(enum.Enum):
    BACKWARD_PRE = 1
    BACKWARD_POST = 2


class StateDictType(enum.Enum):
    FULL_STATE_DICT = 1
    LOCAL_STATE_DICT = 2
    SHARDED_STATE_DICT = 3


@dataclass
class CPUOffload:
    offload_params: bool = False


@dataclass
class FullStateDictConfig:
    offload_to_cpu: bool = False
    rank0_only: bool = False


@dataclass
class FullOptimStateDictConfig:
    offload_to_cpu: bool = True
    rank0_only: bool = False


@dataclass
class ShardedStateDictConfig:
    offload_to_cpu: bool = False


@dataclass
class ShardedOptimStateDictConfig:
    offload_to_cpu: bool = False


@dataclass
class StateDictSettings:
    state_dict_type: StateDictType = StateDictType.FULL_STATE_DICT
    state_dict_config: FullStateDictConfig = None
    optim_state_dict_config: FullOptimStateDictConfig = None

    def __post_init__(self):
        if self.state_dict_type is StateDictType.LOCAL_STATE_DICT:
            raise ConfigError(
                "FullyShardedDataParallel: LOCAL_STATE_DICT is not supported (FULL_STATE_DICT: the full values by the "
                "plain model's names; SHARDED_STATE_DICT: each rank's pieces, for dcp.save / dcp.load)"
            )
        sharded = self.state_dict_type is StateDictType.SHARDED_STATE_DICT
        self.state_dict_config = self.state_dict_config or (
            ShardedStateDictConfig() if sharded else FullStateDictConfig()
        )
        self.optim_state_dict_config = self.optim_state_dict_config or (
            ShardedOptimStateDictConfig() if sharded else FullOptimStateDictConfig()
        )
        wanted = (ShardedStateDictConfig, ShardedOptimStateDictConfig) if sharded else (
            FullStateDictConfig, FullOptimStateDictConfig)  # fmt: skip
        for config, kind in zip((self.state_dict_config, self.optim_state_dict_config), wanted):
            if not isinstance(config, kind):  # (torch's check: the config must be the state dict type's)
                raise ConfigError(
                    f"FullyShardedDataParallel: {self.state_dict_type.name} takes a {kind.__name__}, got "
                    f"{type(config).__name__}"
                )


class FullyShardedDataParallel(Module):
    is_fsdp_unit = True  # (fsdp_wrap.is_unit)

    def __init__(
        self, module, process_group=None, sharding_strategy=None, cpu_offload=None, auto_wrap_policy=None,
        backward_prefetch=BackwardPrefetch.BACKWARD_PRE, mixed_precision=None, ignored_modules=None,
        param_init_fn=None, device_id=None, sync_module_states=False, forward_prefetch=False,
        limit_all_gathers=True, use_orig_params=False, ignored_states=None, device_mesh=None,
    ):  # fmt: skip
        super().__init__()
        strategy = sharding_strategy or ShardingStrategy.FULL_SHARD
        hybrid = strategy in (ShardingStrategy.HYBRID_SHARD, ShardingStrategy._HYBRID_SHARD_ZERO2)
        refused = {
            # (on the cpu the shards already live in host memory: offloading them is what happens anyway)
            "cpu_offload with offload_params=True on a GPU model": cpu_offload is not None
            and cpu_offload.offload_params and any(p.device.type != "cpu" for p in module.parameters()),
            "ignored_modules": bool(ignored_modules), "ignored_states": bool(ignored_states),
            "param_init_fn": param_init_fn is not None,
        }  # fmt: skip
        for what, is_refused in refused.items():
            if is_refused:
                raise ConfigError(f"FullyShardedDataParallel: {what} is not supported")
        self._groups = groups = FSDPGroups.resolve(process_group, hybrid, device_mesh)
        self._strategy, self._sync, self._ran, self._pass = strategy, True, False, None
        self._mixed_precision, self._buffer_dtypes = fsdp_mixed.resolve(mixed_precision), None
        self._settings = StateDictSettings()
        self._entries = state_entries(module)  # names as the plain model's, before any unit is made
        if auto_wrap_policy is not None:
            kwargs = {"sharding_strategy": strategy, "sync_module_states": sync_module_states, "process_group": groups,
                      "use_orig_params": use_orig_params, "mixed_precision": mixed_precision}  # fmt: skip
            policy, kwargs_of = fsdp_mixed.wrapping(auto_wrap_policy, mixed_precision, kwargs)
            wrap_children(module, policy, lambda child: FullyShardedDataParallel(child, **kwargs_of(child)))
        self._fsdp_wrapped_module = module
        owners = own_parameters(module)
        _refuse_shared_with_units_below(module, owners)
        if sync_module_states:
            _broadcast_from_rank_0(module, [p for _, _, p in owners], groups)
        self._handle = None
        if owners:
            self._handle = FlatParamHandle(owners, strategy is not ShardingStrategy.NO_SHARD, groups, use_orig_params,
                                           **fsdp_mixed.handle_dtypes(self._mixed_precision))  # fmt: skip
            if not use_orig_params:  # (else the module's own parameters are the ones registered)
                self._flat_param = self._handle.flat
            for p in (p for p in self._handle.params if p.requires_grad):
                p.register_post_accumulate_grad_hook(lambda _: self._root_unit._queue_post_backward())
        for m in self.modules():  # the outermost unit made last is the root of all below it
            if isinstance(m, FullyShardedDataParallel):
                m.__dict__["_root_unit"] = self

    @property
    def module(self):
        return self._fsdp_wrapped_module

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """As the plain model names them, the wrappers' `_fsdp_wrapped_module.` dropped (with use_orig_params
        the names a param-group rule reads; else the units' `_flat_param`s). torch's drops it inside
        summon_full_params only, and names them `_fsdp_wrapped_module.…` outside: a deviation, kept so that
        names match the plain model's everywhere."""
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            yield name.replace("_fsdp_wrapped_module.", ""), p

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "_fsdp_wrapped_module":
                raise
            return getattr(self._fsdp_wrapped_module, name)  # (torch forwards to the wrapped module)

    # ---- forward and backward --------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        args, kwargs = fsdp_mixed.pre_forward(self, args, kwargs)
        handle = self._handle
        if handle is not None:
            # gathered by a forward whose backward has not come (a logged loss): the optimizer may have stepped
            handle.unshard(fresh=self._ran)  # since, so gather anew (torch's does not)
        out = self._fsdp_wrapped_module(*args, **kwargs)
        if handle is None:
            return out
        tracked = [t for t in _tensors(out) if t.requires_grad] if is_grad_enabled() else []
        if not tracked:  # no backward will come: nothing to keep
            handle.reshard()
            return out
        self._ran = True
        if self._strategy in (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD):
            handle.reshard()
        else:
            handle.show_pieces()
        for t in tracked:  # (every strategy: a second backward through this graph comes after the reshard)
            t.register_hook(self._pre_backward)
        return out

    def _pre_backward(self, grad):
        """Backward has reached the unit's output: its parameters gathered again for the unit's ops."""
        self._ran = True  # (again, for each backward through a retained graph: torch reduces each one's)
        self._handle.unshard()
        self._handle.set_aside_grads()
        self._root_unit._queue_post_backward()

    def _queue_post_backward(self):
        if self._pass is not current_pass():
            self._pass = current_pass()
            queue_callback(self._post_backward)

    def _post_backward(self):
        """Backward has ended: each unit some rank's backward reached reduces its gradients (pre-order: one
        order on every rank) unless under no_sync, which keeps them; each unit that ran frees its gathered
        parameters."""
        self._pass = None
        units = [u for u in _units(self) if u._handle is not None]
        if self._sync:  # a unit no rank's loss reached keeps flat.grad as it was (None after zero_grad), as
            # torch's; one only some ranks' losses reached (a data-dependent loss) is reduced with the others'
            # zeros, where torch's ranks would wait for each other in different collectives. (Every rank must
            # still run every unit's forward alike, and under FULL_SHARD its losses must reach the same units:
            # the gathers, in forward and where backward reaches a unit, are collectives.)
            for unit, count in zip(units, _ranks_with_grads(units, self._groups)):
                if count:
                    unit._handle.reduce_grads()
        else:
            for unit in units:
                if unit._handle.has_new_grads():
                    unit._handle.keep_grads()
        for unit in units:
            if unit._ran:
                unit._ran = False
                unit._handle.reshard()

    @contextlib.contextmanager
    def no_sync(self):
        """Backwards inside accumulate the full gradients locally, as each unit's `flat.grad` (torch's: the
        optimizer's zero_grad clears them; do not step inside); the next synced backward reduces them."""
        before, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = before

    # ---- the full parameters ---------------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def summon_full_params(module, recurse=True, writeback=True, rank0_only=False, offload_to_cpu=False,
                           with_grads=False):  # fmt: skip
        """Every unit's full parameters in its module's attributes inside the block (a collective: every
        rank enters it); with writeback, changes made to them are kept. As torch's, the original parameters
        are the registered ones inside (not the units' `_flat_param`s), so `parameters()` yields them and a
        write through it is kept; with `rank0_only` only global rank 0 holds them (the others keep their
        shards; writeback must be False). `offload_to_cpu`: a cpu model's are there already."""
        if with_grads:
            raise ConfigError("summon_full_params: with_grads=True is not supported")
        if rank0_only and writeback:
            raise ConfigError("summon_full_params: writeback=True and rank0_only=True is not supported (as torch's)")
        units = [u for u in (_units(module) if recurse else [module]) if u._handle is not None]
        if offload_to_cpu and any(u._handle.flat.device.type != "cpu" for u in units):
            raise ConfigError("summon_full_params: offload_to_cpu=True for a GPU model is not supported")
        gathered = [u for u in units if not u._handle.unsharded]
        for u in units:  # (one gathered by a forward whose backward is to come: anew, a step may have come since;
            u._handle.unshard(fresh=True, full_precision=True)  # its backward gathers in param_dtype again)
        shown = units if not rank0_only or loop.rank() == 0 else []
        for u in units:
            if u not in shown and u in gathered:  # (every rank took part in the gather rank 0 needed)
                u._handle.reshard()
        for u in shown:
            u._register_originals(True)
        try:
            yield
        finally:
            for u in shown:
                u._register_originals(False)
            for u in shown:
                if u in gathered:
                    u._handle.reshard(writeback=writeback)
                else:  # (gathered before, by a forward whose backward is to come: stays so)
                    if writeback:
                        u._handle.write_back()
                    u._handle.show_pieces()

    def _register_originals(self, inside):
        """summon_full_params: the unit's original parameters registered instead of its `_flat_param` (inside),
        or back (after); with use_orig_params they are registered always."""
        if self._handle.orig:
            return
        for owner, name, p in self._handle.owners:
            if inside:
                owner._parameters[name] = p
            else:
                owner._parameters.pop(name, None)
        if inside:
            self._parameters.pop("_flat_param", None)
        else:
            self._parameters["_flat_param"] = self._handle.flat

    @staticmethod
    def set_state_dict_type(module, state_dict_type, state_dict_config=None, optim_state_dict_config=None):
        """What `state_dict()` and `optim_state_dict()` of every unit under `module` give → the settings before."""
        settings = StateDictSettings(state_dict_type, state_dict_config, optim_state_dict_config)
        before = next((u._settings for u in _units(module)), StateDictSettings())
        for unit in _units(module):
            unit._settings = settings
        return before

    @staticmethod
    @contextlib.contextmanager
    def state_dict_type(module, state_dict_type, state_dict_config=None, optim_state_dict_config=None):
        """torch's checkpoint idiom: `with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=True, rank0_only=True)): state = model.state_dict()`."""
        before = FullyShardedDataParallel.set_state_dict_type(
            module, state_dict_type, state_dict_config, optim_state_dict_config
        )
        try:
            yield
        finally:
            for unit in _units(module):
                unit._settings = before

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """The full parameters and persistent buffers by the plain model's names (copies): on every rank, or
        on rank 0 only with `rank0_only` (the others get an empty dict); on the CPU with `offload_to_cpu`."""
        config = self._settings.state_dict_config
        out = OrderedDict() if destination is None else destination
        if self._settings.state_dict_type is StateDictType.SHARDED_STATE_DICT:
            return sharded_state_dict(self, out, prefix, config.offload_to_cpu)
        full = {}  # gathered from the shards themselves (every rank: a collective), never from a unit's
        for unit in _units(self):  # parameters, which a forward whose backward is to come may hold older
            if unit._handle is not None:
                full.update(
                    zip(map(id, unit._handle.params), unit._handle.split(unit._handle.gather(unit._handle.flat.array)))
                )
        if config.rank0_only and not self._groups.is_rank_0:
            return out
        for key, entry in self._entries:
            t = resolve(entry)
            value = Tensor(fsdp_mixed.saved(self, entry, full.get(id(t), t.array)), device=t.device)
            out[prefix + key] = value.cpu() if config.offload_to_cpu else value
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Full values by the plain model's names into every rank's shards; → (missing, unexpected). With
        `rank0_only`, rank 0's dict is sent to the others first."""
        if self._settings.state_dict_type is StateDictType.SHARDED_STATE_DICT:
            return load_sharded_state_dict(self, state_dict, strict)
        if self._settings.state_dict_config.rank0_only:
            state_dict = self._groups.broadcast_object(state_dict if self._groups.is_first else None)
        with FullyShardedDataParallel.summon_full_params(self, writeback=True), no_grad():
            missing, unexpected = check_state_dict(self, state_dict, strict)  # (raising: the write-back keeps all)
            for key, entry in self._entries:
                if key in state_dict:
                    assign(resolve(entry), state_dict[key])
        return _IncompatibleKeys(missing, unexpected)

    @staticmethod
    def optim_state_dict(model, optim):
        """The optimizer's whole state keyed by the plain model's parameter names (fsdp_optim.py)."""
        from distgraph.distributed.fsdp_optim import optim_state_dict

        return optim_state_dict(model, optim, model._settings.optim_state_dict_config)

    @staticmethod
    def optim_state_dict_to_load(model, optim, optim_state_dict):
        """Such a dict → what `optim.load_state_dict` takes on this rank (fsdp_optim.py)."""
        from distgraph.distributed.fsdp_optim import optim_state_dict_to_load

        return optim_state_dict_to_load(model, optim, optim_state_dict, model._settings.optim_state_dict_config)

    def clip_grad_norm_(self, max_norm, norm_type=2.0):
        """The gradients' norm over every rank's shards (torch's FSDP.clip_grad_norm_), clipped to max_norm
        on every rank alike → the total norm (float64, 0-d, on the parameters' device)."""
        norm_type = float(norm_type)
        local = 0.0
        grads = [(u._handle, a) for u in _units(self) if u._handle is not None for a in u._handle.grad_arrays()]
        for handle, array in grads:
            if array.size == 0:
                continue
            xp = namespace(array)
            g = xp.abs(array.astype(xp.float64))
            if norm_type == float("inf"):
                local = max(local, float(g.max()))
            else:  # a block is held by each of its replicas, a NO_SHARD gradient whole by every rank: each once
                local += float(xp.sum(g**norm_type)) / (handle.ranks / handle.world)
        total = Tensor(to_device(np.array([local]), loop._context["device"]))  # (NCCL reduces GPU arrays only)
        op = loop.ReduceOp.MAX if norm_type == float("inf") else "sum"
        self._groups.all_reduce(total, op)
        total = float(total.array[0])
        norm = total if norm_type == float("inf") else total ** (1.0 / norm_type)
        coef = float(max_norm) / (norm + 1e-6)
        if coef < 1:
            for _, array in grads:
                array *= array.dtype.type(coef)
        device = next((p.device for p in self.parameters()), loop._context["device"])  # (torch's: the grads')
        return Tensor(to_device(np.asarray(norm), device))


FSDP = FullyShardedDataParallel


def _units(module):
    """Every FSDP unit at or under `module`, pre-order."""
    return [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]


def _ranks_with_grads(units, groups):
    """For each unit, how many ranks' backward reached its parameters (one all-reduce for all units)."""
    mine = np.array([u._handle.has_new_grads() for u in units], np.int64)
    if groups.world == 1 or not len(mine):
        return mine.tolist()
    counts = Tensor(to_device(mine, loop._context["device"]))  # (NCCL reduces GPU arrays only)
    groups.all_reduce(counts, "sum")
    return to_device(counts.array, "cpu").tolist()


def _tensors(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):  # (torch's _apply_to_tensors looks in them too)
        return [t for f in dataclasses.fields(out) for t in _tensors(getattr(out, f.name))]
    return []


def _refuse_shared_with_units_below(module, owners):
    """A parameter a unit below already holds cannot be in this one's flat array too (torch fails there
    later, unclearly): its modules must be wrapped in one unit."""
    below = {id(p): u for u in _units(module) for p in u._handle.params} if owners else {}
    for m, name, p in owners:
        if id(p) in below:
            path = next((n for n, x in module.named_modules() if x is m), "?")
            handle = below[id(p)]._handle
            shape = handle.shapes[[id(q) for q in handle.params].index(id(p))]
            raise ConfigError(
                f"FullyShardedDataParallel: parameter {(path + '.' if path else '') + name} (shape {shape}) "
                "is shared with a unit below it; shared parameters must be in one unit (wrap their modules' common "
                "parent, or leave them out of the auto_wrap_policy)"
            )


def _broadcast_from_rank_0(module, params, groups):
    buffers = [b for m in modules_outside_units(module) for b in m._buffers.values() if b is not None]
    with no_grad():
        groups.broadcast([*params, *buffers])
