"""DistributedDataParallel: torch's wrapper for a training loop of one's own, inside `dg.distributed.launch`.

    model = dist.DistributedDataParallel(make_model())   # every rank starts from rank 0's parameters
    loss_fn(model(x_shard), y_shard).backward()          # .grad is the mean over the ranks when it returns
    optimizer.step()

What it does, as torch's: at construction rank 0's parameters and buffers go to every rank; before a forward
in training that follows one with grad enabled outside no_sync (torch's `require_forward_param_sync`: once per
accumulation cycle), rank 0's buffers (batch-norm statistics) too (`broadcast_buffers`; not in eval mode, where
torch's broadcast makes an evaluation on rank 0 alone hang); backward leaves every parameter's `.grad`
averaged over the ranks; `no_sync()` skips that for gradient accumulation (the next synced backward reduces what
accumulated); whether a backward reduces is decided by its forward, inside or outside no_sync, as torch's;
`.module` is the wrapped model and the state_dict's keys start "module.".

How, as torch's reducer: each parameter has a post-accumulate hook that hands its final gradient to a
`GradBucketer` (buckets.py, the Trainer's): parameters are packed into buckets of `bucket_cap_mb` (25 MB) from
the last to the first, and a bucket whose gradients are all in is all-reduced by a background thread while
backward goes on — the launch's segment on one node, gloo across nodes. The first hook of a backward also
queues one callback for its end (autograd/callbacks.py), which waits for the buckets and reduces one more
number per parameter: how many ranks had its gradient. A parameter no rank's forward used keeps `.grad` None,
one used by some ranks gets the mean with zeros from the others (torch's `find_unused_parameters=True`,
here always: the flag is accepted and changes nothing; torch without it raises at the next iteration).

The other constructor arguments, as torch's where they apply: `bucket_cap_mb` (a positive number);
`device_ids` None for a CPU module (torch's rule), one device at most; `gradient_as_bucket_view` changes no
number: buckets are already reduced in place in the gradients, without a copy into a bucket (the memory it
saves in torch); `static_graph`, `check_reduction` (deprecated in torch) and `batched_grad_copy` (fewer kernel
launches in torch) change nothing; `dim` and `output_device` are for multi-device modules, which DDP here does not
split; `init_sync=False` skips the broadcast at construction and `forward_sync_buffers` (torch 2.13's name for
`broadcast_buffers`) the one before each forward; `device_mesh` (1-d) stands for its group. Refused by name:
`mixed_precision`, `delay_all_reduce_named_params`, `param_to_hook_all_reduce`, `bucket_cap_mb_list` and
`skip_all_reduce_unused_params=True`.

`process_group=dist.new_group(ranks)` replicates the model over those ranks alone: its broadcasts, its gradient
buckets and its counts run on that group's communicator (no comm hook or join there).

`register_comm_hook(state, hook)`: a hook reduces each bucket instead of the built-in mean (torch's
`algorithms.ddp_comm_hooks.default_hooks`: allreduce, fp16 / bf16 compression; the contract is in
grad_bucket.py). `join()`: uneven numbers of batches per rank (algorithms/join.py): a rank out of batches
shadows the others' buffer broadcasts (from the highest rank still training, as torch's) and gradient
all-reduces with zeros until all have joined, so the mean divides by the initial world size
(`divide_by_initial_world_size=False`: by the ranks still training); then every rank takes the last
joiner's parameters and buffers.
"""

import contextlib

import numpy as np

from distgraph.autograd.callbacks import current_pass, queue_callback
from distgraph.autograd.grad_mode import is_grad_enabled, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import writeable
from distgraph.distributed import loop
from distgraph.distributed.algorithms.ddp_comm_hooks.default_hooks import DEFAULT_HOOKS
from distgraph.distributed.algorithms.join import Join, Joinable, JoinHook, count_ranks, highest_rank_with
from distgraph.distributed.buckets import GradBucketer
from distgraph.distributed.grad_bucket import run_comm_hook
from distgraph.distributed.process_group import _check_group, group
from distgraph.distributed.subgroups import run_over
from distgraph.errors import ConfigError, DistributedError
from distgraph.nn.module import Module


class DistributedDataParallel(Module, Joinable):
    def __init__(
        self,
        module,
        device_ids=None,
        output_device=None,
        dim=0,
        broadcast_buffers=None,
        init_sync=True,
        process_group=None,
        bucket_cap_mb=None,
        find_unused_parameters=False,
        check_reduction=False,
        gradient_as_bucket_view=False,
        static_graph=False,
        delay_all_reduce_named_params=None,
        param_to_hook_all_reduce=None,
        mixed_precision=None,
        device_mesh=None,
        skip_all_reduce_unused_params=False,
        bucket_cap_mb_list=None,
        batched_grad_copy=False,
        forward_sync_buffers=None,
    ):
        super().__init__()
        if not isinstance(module, Module):
            raise ConfigError(
                f"DistributedDataParallel: module must be a distgraph.nn.Module, got {type(module).__name__}"
            )
        _refuse_unsupported(delay_all_reduce_named_params=delay_all_reduce_named_params, mixed_precision=mixed_precision,
                            param_to_hook_all_reduce=param_to_hook_all_reduce, bucket_cap_mb_list=bucket_cap_mb_list,
                            skip_all_reduce_unused_params=skip_all_reduce_unused_params or None)  # fmt: skip
        self._group = _group_of(process_group, device_mesh)
        self._world = loop.world_size() if self._group is None else self._group.size()
        if bucket_cap_mb is not None and (isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, int | float) or not bucket_cap_mb > 0):  # fmt: skip
            raise ConfigError(
                f"DistributedDataParallel: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}"
            )
        _check_devices(module, device_ids, output_device)
        self.module = module
        # torch 2.13: forward_sync_buffers replaces broadcast_buffers (whose False also keeps buffers out of the
        # init sync); both default to syncing
        self.broadcast_buffers = next((b for b in (forward_sync_buffers, broadcast_buffers) if b is not None), True)
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view, self.static_graph = gradient_as_bucket_view, static_graph
        self._comm_hook, self._join_config, self._divide_by_initial, self._training_ranks = None, None, True, None
        self.require_backward_grad_sync = True
        # torch's: whether the last forward had grad enabled outside no_sync (the next forward then broadcasts the
        # buffers, and the backward of this one reduces)
        self.require_forward_param_sync = True
        self._pass = None  # the backward pass whose callback reduces the gradients (callbacks.current_pass)
        self._params = [p for p in module.parameters() if p.requires_grad]
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._had = [False] * len(self._params)
        self._used_unsynced = [False] * len(self._params)  # reached by a backward under no_sync since the last sync
        self.bucket_cap_mb, self._bucketer = bucket_cap_mb, None  # (built at the first synced backward)
        if init_sync:  # (False: the user vouches that every rank starts alike, as torch's)
            # (torch 2.13: the deprecated broadcast_buffers=False keeps buffers out, unless forward_sync_buffers is given)
            keep_out = broadcast_buffers is False and forward_sync_buffers is None
            buffers = [] if keep_out else self._buffers_to_sync()
            with no_grad():
                run_over(self._group, loop.broadcast, list(module.parameters()) + buffers, 0)
        for p in self._params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _buffers_to_sync(self):
        return [b for b in self.module.buffers() if b is not None and b.array.dtype.kind in "fiu"]

    def forward(self, *args, **kwargs):
        self._training_ranks = Join.notify_join_context(self)
        if self._training_ranks is not None:  # tell the joined ranks whether this backward reduces (no_sync)
            count_ranks(self.require_backward_grad_sync)
        self._sync_buffers(training=True)
        out = self.module(*args, **kwargs)
        self.require_forward_param_sync = is_grad_enabled() and self.require_backward_grad_sync
        return out

    def _sync_buffers(self, training):
        """Before a forward in training: every rank's buffers become rank 0's; in a join, the highest rank
        still training's, as torch's (rank 0 may have joined with stale ones). `training`: whether this
        rank is (False: a joined rank's shadow)."""
        if self.training and self.require_forward_param_sync and self.broadcast_buffers and self._world > 1:
            buffers = self._buffers_to_sync()
            if buffers:
                joining = self._join_config is not None and self._join_config["enable"]
                src = highest_rank_with(training) if joining else 0
                with no_grad():
                    run_over(self._group, loop.broadcast, buffers, src)

    def register_comm_hook(self, state, hook):
        """Reduce each gradient bucket with `hook(state, bucket)` instead of the built-in mean (torch's;
        once, before training). The default hooks' state is the process group: None here."""
        if not callable(hook):
            raise ConfigError(f"register_comm_hook: hook must be callable, got {type(hook).__name__}")
        if self._comm_hook is not None:
            raise ConfigError("register_comm_hook: register_comm_hook or register_builtin_comm_hook can only be called once.")  # fmt: skip
        if self._group is not None:
            raise ConfigError(
                "register_comm_hook: a DistributedDataParallel over a new_group's ranks takes no comm hook"
            )
        if hook in DEFAULT_HOOKS and state is not None and state is not group.WORLD:  # (torch's docs pass it)
            raise ConfigError(
                f"register_comm_hook: {hook.__name__}'s state is the process group: None (the launch's), got {state!r}"
            )
        self._comm_hook = (hook, state)

    def _reduce_bucket(self, k, arrays):
        """The bucketer's reduction of bucket k: the built-in mean, or the registered hook."""
        if self._comm_hook is None:  # (on gloo/nccl the tag keeps nothing apart: SyncBatchNorm has its own group)
            return self._bucketer.comm.allreduce(arrays, "mean", f"ddp{k}")
        params = [self._params[i] for i in self._bucketer.buckets[k].members]
        return run_comm_hook(*self._comm_hook, k, arrays, params, k == len(self._bucketer.buckets) - 1)

    def join(self, divide_by_initial_world_size=True, enable=True, throw_on_early_termination=False):
        """torch's: `with ddp.join(): for batch in my_batches: ...` — uneven inputs (algorithms/join.py)."""
        return Join([self], enable, throw_on_early_termination, divide_by_initial_world_size=divide_by_initial_world_size)  # fmt: skip

    def join_hook(self, **kwargs):
        if self._group is not None:  # (Join([model]) as well as model.join())
            raise ConfigError(
                "DistributedDataParallel.join: a model over a new_group's ranks cannot join (the launch's only)"
            )
        self._divide_by_initial = kwargs.get("divide_by_initial_world_size", True)
        return _DDPJoinHook(self)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside accumulates each rank's own gradients; the first synced backward after reduces them."""
        before, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = before

    def _grad_ready(self, param):
        if not self.require_forward_param_sync:  # its forward ran under no_sync (torch decides there)
            self._used_unsynced[self._index[id(param)]] = True  # used once in a no_sync session: used (torch's)
            return
        if self._world == 1 and self._comm_hook is None:
            return  # alone, the mean is the gradient; a registered hook still runs (torch's reducer calls it)
        if self._pass is not current_pass():
            self._start_pass()
        grad = param.grad.array
        self._had[self._index[id(param)]] = True
        self._bucketer.ready(self._index[id(param)], grad if _reducible_in_place(grad) else grad.copy())

    def _ensure_bucketer(self):
        if self._bucketer is None:
            params = [p.array for p in self._params]
            comm = (
                run_over(self._group, loop.communicator) if self._world > 1 else None
            )  # (alone: only the hook reduces)
            self._bucketer = GradBucketer(comm, params, self.bucket_cap_mb, "mean", "ddp", reduce=self._reduce_bucket)

    def _start_pass(self):
        if self._bucketer is not None and (self._bucketer.launched or any(self._had)):
            raise DistributedError(
                "DistributedDataParallel: a backward failed after its gradient buckets started reducing, so the "
                "ranks' all-reduces are out of step; end the launch (every rank must run the same backwards)"
            )
        self._ensure_bucketer()
        self._pass = current_pass()
        queue_callback(self._reduce_gradients)

    def _reduce_gradients(self):
        """Once backward ends: every parameter's .grad ← the mean over the ranks (the buckets), and how many
        ranks had it (one small all-reduce) decides None or the mean with zeros for the ones this rank lacked."""
        self._pass = None
        params, fired, used = self._params, self._had, self._used_unsynced
        self._had, self._used_unsynced = [False] * len(params), [False] * len(params)
        mine = list(fired)
        for i, p in enumerate(params):  # not reached now but holding a gradient (accumulated under no_sync, or
            if not fired[i] and p.grad is not None:  # not zeroed): it goes in, not zeros, as torch's reducer copies
                grad = p.grad.array  # a defined .grad into the bucket; the mean then replaces it
                self._bucketer.ready(i, grad if _reducible_in_place(grad) else grad.copy())
                mine[i] = True
        reduced = self._bucketer.wait()
        users = self._count_users([f or u for f, u in zip(fired, used)])  # used since the last sync, no_sync too
        self._take_reduced(reduced, mine, users, self._training_ranks)

    def _take_reduced(self, reduced, had, counts, ranks):
        """Every parameter's .grad ← its reduced gradient (scaled to the ranks still training when a join
        asks for that); None where no rank used it."""
        params = self._params
        if ranks is not None and ranks < self._world and not self._divide_by_initial:
            xp, scale = params[0].device.xp, self._world / ranks  # the mean over the ranks still training
            reduced = [g * xp.asarray(scale, g.dtype) for g in reduced]
        for p, g, mine, n in zip(params, reduced, had, counts):
            if n == 0:
                continue  # no rank used it: .grad stays None, as torch's
            if not mine:
                p.grad = Tensor(g.copy(), device=p.device)
            elif g is not p.grad.array:  # (a copy went: a strided or read-only gradient)
                p.grad.array[...] = g

    def _count_users(self, had):
        """How many ranks had each parameter's gradient this pass (one all-reduce)."""
        device = self._params[0].device
        counts = Tensor(device.xp.asarray(had, np.float32), device=device)
        with no_grad():
            run_over(self._group, loop.all_reduce, counts, "sum")
        return counts.tolist()


class _DDPJoinHook(JoinHook):
    """A joined rank's part in one iteration of the others: the buffer broadcast and every bucket's
    reduction (through the comm hook, if any) with zero gradients, then the count of users (zeros); at the
    end, every rank takes the last joiner's parameters and buffers."""

    def __init__(self, ddp):
        self.ddp = ddp

    def main_hook(self):
        """Beyond torch's: the joined rank keeps the reduced gradients (torch's drops them, leaving its last
        own ones), so a joinable after it — ZeroRedundancyOptimizer's step for this rank's share — updates
        with what the training ranks update theirs with."""
        ddp = self.ddp
        syncing = count_ranks(False) > 0  # (the others' forward: whether their backward reduces)
        ddp._sync_buffers(training=False)
        if syncing and ddp._params:
            ddp._ensure_bucketer()
            reduced, had = ddp._bucketer.wait(), [False] * len(ddp._params)
            for p in ddp._params:  # (as if zeroed: none of this rank's own gradients is in this iteration)
                p.grad = None
            ddp._take_reduced(reduced, had, ddp._count_users(had), ddp._join_config["training"])

    def post_hook(self, is_last_joiner):
        src = highest_rank_with(is_last_joiner)
        with no_grad():
            loop.broadcast(list(self.ddp.module.parameters()) + self.ddp._buffers_to_sync(), src=src)


def _group_of(process_group, device_mesh):
    """The subgroup the model is replicated over (None: the launch's), from torch's process_group or a 1-d
    device_mesh."""
    if device_mesh is not None:
        if process_group is not None:
            raise ConfigError("DistributedDataParallel: Cannot specify both process_group and device_mesh arguments.")
        if device_mesh.ndim != 1:
            raise ConfigError(f"DistributedDataParallel: Only 1D device mesh is supported, got {device_mesh!r}")
        (process_group,) = device_mesh.member_groups("DistributedDataParallel")
    group = _check_group(process_group, "DistributedDataParallel", subgroups=True)
    if group is not None and group.rank() < 0:
        raise ConfigError(
            f"DistributedDataParallel: this rank ({loop.rank()}) is not in process_group {list(group.ranks)}"
        )
    return group


def _refuse_unsupported(**given):
    for what, value in given.items():
        if value is not None:
            raise ConfigError(f"DistributedDataParallel: {what}={value!r} is not supported")


def _check_devices(module, device_ids, output_device):
    """torch's rules: device_ids None for a CPU module, else one device."""
    if device_ids is None:
        return
    devices = {str(p.device) for p in module.parameters()}
    if devices <= {"cpu"}:
        raise ConfigError(
            "DistributedDataParallel: device_ids and output_device arguments only work with single-device/multiple-"
            f"device GPU modules or CPU modules, but got device_ids {device_ids}, output_device {output_device}, and "
            f"module parameters {devices}."
        )
    if len(device_ids) != 1:
        raise ConfigError("DistributedDataParallel: device_ids can only be None or contain a single element.")


def _reducible_in_place(array):
    return array.flags.c_contiguous and writeable(array)
