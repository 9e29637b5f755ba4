"""torch.distributed's subgroups inside a `dg.distributed.launch`: `new_group(ranks)` of some of the launch's
ranks, and every collective's `group=` (process_group.py wires them in).

A subgroup is a communicator of its own over its members, on the launch's transport (a shared-memory segment
group on one node, gloo or NCCL across nodes: `allreduce.make_allreduce`), made at its first collective. Its
name is the launch's group's and the how-many-th `new_group` call made it: torch asks every rank to call
new_group, with the same ranks, in the same order, so every member names it alike without a message. With
torch's `use_local_synchronization=True` only the members call it, so that count differs from rank to rank
(ranks {0, 1} and {2, 3} each making their own group would both name theirs the first): such a group is named
by its sorted ranks and the how-many-th group of those ranks it is, which its members alone agree on. A
collective given the group runs with this rank's place swapped for its place in the group (`loop.in_group`:
rank, world size, communicator, nodes), so every collective — the object ones, the other ReduceOps, the gathers
— runs unchanged over the members alone, each group with its own segments, barriers and call board. As in
torch, a rank outside the group returns at once, and src / dst name global ranks (translated to the group's; one
outside the group is refused by name).
"""

import hashlib

from distgraph.distributed import loop
from distgraph.distributed.allreduce import make_allreduce
from distgraph.distributed.loop import _context
from distgraph.errors import ConfigError


class SubGroup:
    """Some of the launch's ranks (torch's ProcessGroup from new_group); `rank()` is -1 outside it."""

    def __init__(self, ranks, name):
        self.ranks, self.name, self._comm = tuple(ranks), name, None

    def rank(self):
        """This process's place in the group (-1 outside it), from its launch rank even inside another group's
        collective."""
        me = _context.launch_rank()
        return self.ranks.index(me) if me in self.ranks else -1

    def size(self):
        return len(self.ranks)

    def group_rank(self, global_rank, what):
        return place_in(self.ranks, global_rank, what)

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) as a collective of this group's members (see the module's docstring)."""
        if self._comm is None:
            self._comm = make_allreduce(self.rank(), self.size(), _context.get("backend", "shm"), self.name,
                                        _context.get("timeout_s", 120.0), _context.get("device", "cpu"))  # fmt: skip
            _context.setdefault("on_close", []).append(self.close)
        nodes = _context.get("nodes")
        nodes = None if nodes is None else [nodes[r] for r in self.ranks]
        with loop.in_group(self.rank(), self.size(), self._comm, nodes, self):
            return fn(*args, **kwargs)

    def close(self):
        if self._comm is not None:
            self._comm.close()
            self._comm = None

    def __repr__(self):
        return f"ProcessGroup(ranks {list(self.ranks)}, rank {self.rank()} of {self.size()})"

    def __copy__(self):
        return self  # a handle to its communicator: a copied module (tensor parallelism's) keeps the one group

    def __deepcopy__(self, memo):
        return self


def run_over(group, fn, *args):
    """fn(*args), a collective, over `group`'s members: a SubGroup's, or (None) the launch's."""
    return fn(*args) if group is None else group.run(fn, *args)


def place_in(ranks, global_rank, what):
    """`global_rank`'s place among a group's `ranks`, or a ConfigError naming both (torch's words)."""
    if global_rank not in ranks:
        raise ConfigError(f"{what}: Global rank {global_rank} is not part of group {list(ranks)}")
    return list(ranks).index(global_rank)


def new_subgroup(ranks, world, local=False):
    """The subgroup of `ranks` (checked: distinct ranks of the launch, named in any order). `local`: torch's
    use_local_synchronization, where only the members call new_group (see the module's docstring)."""
    ranks = list(ranks)
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks) or len(set(ranks)) != len(ranks):
        raise ConfigError(f"new_group: ranks must be distinct ints, got {ranks}")
    outside = [r for r in ranks if not 0 <= r < world]
    if outside or not ranks:
        raise ConfigError(f"new_group: ranks {ranks} are not the launch's ranks {list(range(world))}")
    ranks, group = sorted(ranks), _context.get("group", "dg")
    if not local:
        count = _context["subgroups"] = _context.get("subgroups", 0) + 1
        return SubGroup(ranks, f"{group}.g{count}")
    made = _context.setdefault("local_subgroups", {})  # sorted ranks -> how many groups of them so far
    count = made[tuple(ranks)] = made.get(tuple(ranks), 0) + 1
    label = "-".join(map(str, ranks))
    if len(label) > 64:  # (a segment's name must stay within a file name's 255 bytes)
        label = hashlib.sha1(label.encode()).hexdigest()[:16]
    return SubGroup(ranks, f"{group}.l{label}.{count}")
