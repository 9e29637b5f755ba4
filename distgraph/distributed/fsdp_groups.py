"""Over which ranks an FSDP unit is split and its gradients averaged: torch's `process_group` and its hybrid
sharding strategies.

- FULL_SHARD, SHARD_GRAD_OP, NO_SHARD: one group — the launch's, or `process_group` (a `new_group`'s): the
  unit is split over its members and averaged over them.
- HYBRID_SHARD, _HYBRID_SHARD_ZERO2: split within a shard group and replicated across a replicate group —
  each rank in one of each, the data-parallel ranks their product. Gradients are reduce-scattered within the
  shard group, then all-reduced across the replicate group: the slow links (across nodes) carry one
  shard's bytes, not the model's. `process_group` is the pair (shard group, replicate group) as torch's, or
  None: torch's default, one shard group per node and a replicate group of each local rank across the nodes
  (every node must hold as many ranks).

A collective over all the data-parallel ranks (counting the ranks a unit's gradients reached, the clip norm,
rank 0's values sent everywhere) runs in two steps, within the shard group then across the replicate group:
a sum, a max or a broadcast from the rank at place 0 in both (`is_first`) composes so. A rank0_only state dict
goes, as torch's, to place 0 of the shard group (under a hybrid strategy, one rank per shard group).
"""

from distgraph.distributed import loop
from distgraph.distributed.subgroups import SubGroup, new_subgroup, run_over
from distgraph.errors import ConfigError


class FSDPGroups:
    """The shard group and the replicate group of one FSDP model (each None for the launch's whole group); a
    model not replicated (`replicated` False) is one shard group."""

    def __init__(self, shard=None, replicate=None, replicated=False):
        self.shard, self.replicate, self.replicated = shard, replicate, replicated

    @classmethod
    def resolve(cls, process_group, hybrid, device_mesh=None):
        """torch's `process_group` argument (None, dist.group.WORLD, a new_group's, or for a hybrid strategy
        the pair (shard, replicate)) or `device_mesh` (1-d; for a hybrid strategy 2-d, (replicate, shard), as
        torch's) → FSDPGroups; an FSDPGroups passes through (a parent unit's, for the units its
        auto_wrap_policy makes: one set of groups, not one per unit)."""
        if isinstance(process_group, cls):
            return process_group
        if device_mesh is not None:
            if process_group is not None:
                raise ConfigError(
                    "FullyShardedDataParallel: Cannot pass both process_group and device_mesh at the same time"
                )
            if device_mesh.ndim != (2 if hybrid else 1):
                raise ConfigError(
                    f"FullyShardedDataParallel: {'a hybrid strategy' if hybrid else 'this strategy'} takes a "
                    f"{2 if hybrid else 1}-d device_mesh{' (replicate, shard)' if hybrid else ''}, got {device_mesh!r}"
                )
            groups = device_mesh.member_groups("FullyShardedDataParallel")
            process_group = (groups[1], groups[0]) if hybrid else groups[0]
        if hybrid:
            if process_group is None:
                return cls(*_groups_by_node())
            if not (isinstance(process_group, tuple) and len(process_group) == 2):
                raise ConfigError(
                    "FullyShardedDataParallel: a hybrid sharding strategy takes process_group=(shard group, "
                    f"replicate group) or None (shard within each node, replicate across nodes), got {process_group!r}"
                )
            shard, replicate = (_member(g, what) for g, what in zip(process_group, ("shard", "replicate")))
            common = set(_ranks(shard)) & set(_ranks(replicate))
            if common != {loop.rank()}:
                raise ConfigError(
                    f"FullyShardedDataParallel: the shard group {_ranks(shard)} and the replicate group "
                    f"{_ranks(replicate)} must have this rank ({loop.rank()}) alone in common, not {sorted(common)}"
                )
            return cls(shard, replicate, replicated=_size(replicate) > 1)
        if isinstance(process_group, tuple):
            raise ConfigError(
                "FullyShardedDataParallel: process_group=(shard group, replicate group) is for HYBRID_SHARD and "
                "_HYBRID_SHARD_ZERO2; other strategies take one group"
            )
        return cls(_member(process_group, "process"))

    # ---- places ------------------------------------------------------------------------------------------
    @property
    def shard_rank(self):
        return loop.rank() if self.shard is None else self.shard.rank()

    @property
    def shard_size(self):
        return _size(self.shard)

    @property
    def world(self):
        """How many ranks train the model data-parallel (its gradients are their mean)."""
        return self.shard_size * self.replicas

    @property
    def replicas(self):
        return _size(self.replicate) if self.replicated else 1

    @property
    def is_rank_0(self):
        """torch's FSDP "rank 0" (rank0_only state dicts): place 0 of the shard group."""
        return self.shard_rank == 0

    @property
    def is_first(self):
        """The rank at place 0 in both groups: where a dict handed to every rank comes from."""
        replicate_rank = loop.rank() if self.replicate is None else self.replicate.rank()
        return self.shard_rank == 0 and (not self.replicated or replicate_rank == 0)

    # ---- collectives -------------------------------------------------------------------------------------
    def in_shard(self, fn, *args):
        """fn(*args), a collective, over the shard group."""
        return run_over(self.shard, fn, *args)

    def in_replicate(self, fn, value):
        """fn(value), a sum, max or broadcast, over the replicate group; without replicas that group is this
        rank alone, and `value` its own result."""
        if not self.replicated:
            return value
        return run_over(self.replicate, fn, value)

    def over_all(self, fn, value):
        """fn(value) → value over the shard group, then its result over the replicate group: a sum, a max or a
        broadcast from place 0 over every data-parallel rank."""
        return self.in_replicate(fn, self.in_shard(fn, value))

    def all_reduce(self, tensors, op="sum"):
        """loop.all_reduce over every data-parallel rank (a sum or a max), in place."""

        def reduce(ts):
            loop.all_reduce(ts, op)
            return ts

        return self.over_all(reduce, tensors)

    def broadcast(self, tensors):
        """Rank 0's values into every data-parallel rank's tensors, in place."""

        def broadcast(ts):
            loop.broadcast(ts, 0)
            return ts

        return self.over_all(broadcast, tensors)

    def broadcast_object(self, obj):
        """Rank 0's `obj` → on every data-parallel rank."""
        return self.over_all(lambda o: loop.broadcast_object(o, 0) if loop.world_size() > 1 else o, obj)


def _size(group):
    return loop.world_size() if group is None else group.size()


def _ranks(group):
    return list(range(loop.world_size())) if group is None else list(group.ranks)


def _member(group, what):
    """None for the launch's group, else the new_group's SubGroup this rank must be in."""
    from distgraph.distributed.process_group import group as groups

    if group is None or group is groups.WORLD:
        return None
    if not isinstance(group, SubGroup):
        raise ConfigError(f"FullyShardedDataParallel: {what}_group must be a new_group's or None, got {group!r}")
    if group.rank() < 0:
        raise ConfigError(
            f"FullyShardedDataParallel: this rank ({loop.rank()}) is not in its {what} group {list(group.ranks)}"
        )
    return group


def _groups_by_node():
    """torch's default hybrid groups on this launch's nodes (`hybrid_layout`), made once per launch: every rank
    makes every group, in one order (new_group's rule) → (shard group, replicate group, replicated)."""
    made = loop._context.get("fsdp_hybrid_groups")
    if made is None:
        world, rank = loop.world_size(), loop.rank()
        shards, replicas = hybrid_layout(loop._context.get("nodes") or [0] * world)
        if len(shards) == 1:  # one node: it shards over all, nothing replicates
            shards = replicas = []
        mine = [None, None]
        for i, layout in enumerate((shards, replicas)):
            if len(layout) > 1:  # (one group of all: the launch's own)
                for ranks in layout:
                    group = new_subgroup(ranks, world)
                    mine[i] = group if rank in ranks else mine[i]
        made = loop._context["fsdp_hybrid_groups"] = (*mine, len(replicas) > 0)
    return made


def hybrid_layout(nodes):
    """Each rank's node → (shard groups, replicate groups) as lists of ranks: the ranks of each node shard,
    each local rank's peers across the nodes replicate (torch's default). Every node must hold as many."""
    by_node = {}
    for r, node in enumerate(nodes):
        by_node.setdefault(node, []).append(r)
    if len({len(ranks) for ranks in by_node.values()}) > 1:
        raise ConfigError(
            "FullyShardedDataParallel: HYBRID_SHARD's default groups need as many ranks on every node, got "
            + ", ".join(f"{len(r)} on node {i}" for i, r in enumerate(by_node.values()))
            + "; pass process_group=(shard group, replicate group)"
        )
    shards = list(by_node.values())
    return shards, [list(ranks) for ranks in zip(*shards)]
