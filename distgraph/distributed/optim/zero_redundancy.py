"""torch's ZeroRedundancyOptimizer inside a `dg.distributed.launch` function: each rank keeps the optimizer
state of its share of the parameters only (ZeRO stage 1), beside DistributedDataParallel:

    model = dist.DistributedDataParallel(net)
    opt = dist.optim.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, lr=1e-3)

The share is torch's: in each parameter group, the parameters by size (largest first), each to the rank
with the fewest elements so far — so a state dict consolidated here lines up with torch's. `step()` updates
this rank's share with its own optimizer (the wrapped class, on this rank's parameter groups), then every
rank's updated share reaches every rank in one all-reduce (each rank contributes its share and zeros
elsewhere: the sum is the concatenation, exact), where torch broadcasts from each owner in turn.
`consolidate_state_dict(to)` gathers the shares' states on one rank (every rank calls it), after which
that rank's `state_dict()` is the whole optimizer's, as one optimizer over all parameters would save it;
`load_state_dict` takes such a dict on every rank and keeps its share. It is a Joinable, as torch's:
`with Join([ddp_model, zero]):` — a rank out of batches still steps its share each iteration the others
run (with the mean gradients DDP's join hook leaves it), so ranks with uneven numbers of batches end as
with a plain optimizer. `process_group=dist.new_group(ranks)` shares the state over those ranks alone (ranks and
`consolidate_state_dict(to)` are then the group's; no join). Not offered: `overlap_with_ddp` (the update runs
after backward, in `step()`); `parameters_as_bucket_view` is accepted and changes nothing (each parameter is its own array).
"""

from distgraph.autograd.grad_mode import no_grad
from distgraph.distributed import loop
from distgraph.distributed.algorithms.join import Join, Joinable, JoinHook
from distgraph.distributed.process_group import _check_group
from distgraph.distributed.subgroups import run_over
from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer


class ZeroRedundancyOptimizer(Optimizer, Joinable):
    def __init__(self, params, optimizer_class, process_group=None, parameters_as_bucket_view=False,
                 overlap_with_ddp=False, **defaults):  # fmt: skip
        self._group = _check_group(process_group, "ZeroRedundancyOptimizer", subgroups=True)
        if self._group is not None and self._group.rank() < 0:
            raise ConfigError(
                f"ZeroRedundancyOptimizer: this rank ({loop.rank()}) is not in process_group {list(self._group.ranks)}"
            )
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise ConfigError(
                f"ZeroRedundancyOptimizer: optimizer_class must be a distgraph optimizer class (optim.SGD, "
                f"optim.Adam, ...), got {optimizer_class!r}"
            )
        if overlap_with_ddp:
            raise ConfigError(
                "ZeroRedundancyOptimizer: overlap_with_ddp=True is not supported: call step() after backward"
            )
        self.optimizer_class, self.parameters_as_bucket_view = optimizer_class, parameters_as_bucket_view
        group = self._group
        self.world_size, self.rank = (loop.world_size(), loop.rank()) if group is None else (group.size(), group.rank())
        self.optim, self._owners, self._join_config = None, None, None
        self._all_state_dicts = []
        super().__init__(params, defaults)
        self.optim = optimizer_class(self._local_groups(), **defaults)

    def options(self):
        return {**self.optimizer_class.hyperparameters, **self.optimizer_class.implementation}

    def check(self, options):
        self.optimizer_class.check(self, options)

    # ---- the share ------------------------------------------------------------------------------------------
    def _partition(self):
        """Per rank, its part of each param group (torch's greedy split by size, over the groups in order)."""
        sizes = [0] * self.world_size
        per_rank = [[] for _ in range(self.world_size)]
        for group in self.param_groups:
            mine = [[] for _ in range(self.world_size)]
            names = dict(zip(map(id, group["params"]), group.get("param_names", ())))
            for p in sorted(group["params"], key=lambda t: t.numel(), reverse=True):
                r = sizes.index(min(sizes))
                mine[r].append(p)
                sizes[r] += p.numel()
            for r in range(self.world_size):
                part = {**group, "params": mine[r]}
                if names:  # named_parameters(): each part names its own parameters
                    part["param_names"] = [names[id(p)] for p in mine[r]]
                per_rank[r].append(part)
        return per_rank

    def _local_groups(self):
        return self._partition()[self.rank]

    def _owner(self):
        """{id(parameter): its rank}, kept until the groups change (step() reads it every step)."""
        if self._owners is None:
            self._owners = {id(p): r for r, groups in enumerate(self._partition()) for g in groups for p in g["params"]}  # fmt: skip
        return self._owners

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._owners = None
        if self.optim is not None:  # (during __init__ the local optimizer is built from all groups after)
            self.optim.add_param_group(self._local_groups()[-1])

    def _sync_options(self, source, target):
        for s, t in zip(source, target):
            t.update({k: v for k, v in s.items() if k not in ("params", "param_names")})

    # ---- training -------------------------------------------------------------------------------------------
    def step(self, closure=None):
        """This rank's share updated by its optimizer, then every share on every rank (one all-reduce)."""
        Join.notify_join_context(self)
        self._sync_options(self.param_groups, self.optim.param_groups)  # an lr scheduler sets this one's
        loss = self.optim.step(closure)
        params = self._params()
        if self.world_size > 1:
            owner = self._owner()
            with no_grad():
                for p in params:
                    if owner[id(p)] != self.rank:
                        p.array[...] = 0
                run_over(self._group, loop.all_reduce, params, "sum")
                for p in params:
                    p._vc[0] += 1
        return loss

    def join_hook(self, **kwargs):
        if self._group is not None:
            raise ConfigError("ZeroRedundancyOptimizer: one over a new_group's ranks cannot join (the launch's only)")
        return _ZeroJoinHook(self)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def consolidate_state_dict(self, to=0):
        """Every rank's share of the state onto rank `to` (call it on every rank)."""
        if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to < self.world_size:
            raise ConfigError(f"consolidate_state_dict: to={to!r} is not a rank of {self.world_size}")
        shares = run_over(self._group, loop.allgather_object, self.optim.state_dict())
        self._all_state_dicts = shares if self.rank == to else []

    def state_dict(self):
        if not self._all_state_dicts:
            raise ConfigError(
                "Optimizer state has not been consolidated on this rank. Please call "
                f"`consolidate_state_dict(to={self.rank})` on all ranks beforehand if you meant to save the global state."
            )
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for groups, share in zip(self._partition(), self._all_state_dicts):
            local = [p for g in groups for p in g["params"]]
            for i, entries in share["state"].items():
                state[index[id(local[int(i)])]] = entries
        whole = super().state_dict()
        whole["state"] = dict(sorted(state.items()))
        return whole

    def load_state_dict(self, state_dict):
        """The whole optimizer's state dict (as `state_dict()` gives it, or one optimizer over all the
        parameters): the group options for every rank, the state of this rank's share."""
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        index = {id(p): i for i, p in enumerate(self._params())}
        mine = self._local_groups()
        local = [p for g in mine for p in g["params"]]
        saved = {int(k): v for k, v in state_dict["state"].items()}
        share = {j: saved[index[id(p)]] for j, p in enumerate(local) if index[id(p)] in saved}
        groups, start = [], 0
        for g in mine:
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": list(range(start, start + len(g["params"])))})  # fmt: skip
            start += len(g["params"])
        self.optim.load_state_dict({"state": share, "param_groups": groups})


class _ZeroJoinHook(JoinHook):
    """A joined rank's part in each iteration of the others: its share's step, whose all-reduce they wait for."""

    def __init__(self, zero):
        self.zero = zero

    def main_hook(self):
        self.zero.step()
