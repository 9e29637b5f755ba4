"""Horovod's process sets inside a `dg.distributed.launch`: some of the launch's ranks that run collectives of
their own, beside other sets doing the same.

    even, odd = hvd.ProcessSet([0, 2]), hvd.ProcessSet([1, 3])
    hvd.init(process_sets=[even, odd])            # or hvd.init(process_sets="dynamic"); hvd.add_process_set([0, 2])
    mine = even if hvd.rank() % 2 == 0 else odd
    hvd.allreduce(t, process_set=mine)            # over ranks 0 and 2, or 1 and 3, at the same time

A registered set is a subgroup (subgroups.py): a communicator of its own over its members, named by the order
of registration — so, as Horovod asks, every rank registers the same sets in the same order (`init` or
`add_process_set`). Every op's `process_set=` runs it over the set's members with their places in the set; a
root rank (`broadcast`'s `root_rank`) is a global rank, as Horovod's, and `ProcessSet.rank()` the place in the
set (to read an allgather's rows). A rank outside the set, or a set not registered, is refused by name.
"""

from distgraph.distributed import loop
from distgraph.distributed.subgroups import new_subgroup, run_over
from distgraph.errors import ConfigError


class ProcessSet:
    """Horovod's ProcessSet: `ranks` of the launch (None: the global set, every rank). Registered (given an id and
    a group) by `add_process_set` or `hvd.init(process_sets=[...])`."""

    def __init__(self, ranks=None):
        if ranks is not None:
            if not isinstance(ranks, list | tuple | range) or any(
                isinstance(r, bool) or not isinstance(r, int) for r in ranks
            ):
                raise ConfigError(f"ProcessSet: ranks must be a list of ints (an MPI communicator is not taken here), got {ranks!r}")  # fmt: skip
            ranks = sorted(set(ranks))
        self._ranks, self.group = ranks, None
        self.process_set_id = 0 if ranks is None else None

    @property
    def ranks(self):
        return list(range(loop.world_size())) if self._ranks is None else list(self._ranks)

    def rank(self):
        """This rank's place in the set (-1 outside it); None before it is registered, as Horovod's."""
        if self._ranks is None:
            return loop.rank()
        return None if self.group is None else self.group.rank()

    def size(self):
        if self._ranks is None:
            return loop.world_size()
        return None if self.group is None else self.group.size()

    def included(self):
        if self._ranks is None:
            return True
        return None if self.group is None else self.group.rank() >= 0

    def __repr__(self):
        return f"ProcessSet(process_set_id={self.process_set_id}, ranks={self.ranks}, mpi_comm=None)"


global_process_set = ProcessSet()


def _registry():
    """This launch's registered sets by id (each rank keeps its own, alike on every rank)."""
    return loop._context.setdefault("process_sets", {})


def add_process_set(process_set):
    """Register a set (a ProcessSet or a list of ranks) on this rank → the ProcessSet, with its id. Every rank
    calls it with the same sets in the same order."""
    ps = process_set if isinstance(process_set, ProcessSet) else ProcessSet(process_set)
    if ps is global_process_set or ps.process_set_id is not None:
        raise ConfigError(f"add_process_set: {ps!r} is already registered")
    registry = _registry()
    taken = next((i for i, other in registry.items() if other.ranks == ps.ranks), None)
    if ps.ranks == global_process_set.ranks or taken is not None:
        raise ConfigError(f"add_process_set: a process set of ranks {ps.ranks} is already registered (id {taken or 0})")
    try:
        ps.group = new_subgroup(ps.ranks, loop.world_size())
    except ConfigError as exc:
        raise ConfigError(f"add_process_set: {exc}".replace("new_group: ", "")) from None
    ps.process_set_id = max(registry, default=0) + 1
    registry[ps.process_set_id] = ps
    return ps


def remove_process_set(process_set):
    """Unregister a set (every rank, as Horovod's) → whether it was registered; the global set stays."""
    if not isinstance(process_set, ProcessSet):
        raise ConfigError(f"remove_process_set: expected an hvd.ProcessSet, got {process_set!r}")
    registry = _registry()
    if process_set is global_process_set or registry.get(process_set.process_set_id) is not process_set:
        return False
    del registry[process_set.process_set_id]
    process_set.group.close()
    process_set.process_set_id = process_set.group = None
    return True


def register(process_sets, what="init"):
    """hvd.init's `process_sets`: a list of ProcessSets to register in order, "dynamic" or None (none now)."""
    if process_sets is None or process_sets == "dynamic":
        return
    if not isinstance(process_sets, list | tuple):
        raise ConfigError(f"{what}: process_sets must be a list of ProcessSets or 'dynamic', got {process_sets!r}")
    for ps in process_sets:
        if ps is not global_process_set:
            add_process_set(ps)


def reset():
    """hvd.shutdown: every set unregistered."""
    for ps in list(_registry().values()):
        remove_process_set(ps)


def group_of(process_set, what):
    """The subgroup an op with `process_set` runs over (None: every rank), checked: registered, this rank in it."""
    if process_set is None or process_set is global_process_set:
        return None
    if not isinstance(process_set, ProcessSet):
        raise ConfigError(f"{what}: process_set must be an hvd.ProcessSet, got {process_set!r}")
    if process_set.group is None:
        raise ConfigError(
            f"{what}: {process_set!r} is not registered (hvd.add_process_set, or hvd.init(process_sets=[...]))"
        )
    if process_set.group.rank() < 0:
        raise ConfigError(f"{what}: this rank ({loop.rank()}) is not in the process set of ranks {process_set.ranks}")
    return process_set.group


def run_in(process_set, what, fn, *args):
    """fn(*args), a collective, over the set's members (every rank's for the global set)."""
    return run_over(group_of(process_set, what), fn, *args)
