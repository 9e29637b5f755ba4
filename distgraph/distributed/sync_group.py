"""The process group a model's layers reach inside a distributed worker (ops/collective.py): the sums of
nn.SyncBatchNorm, over a communicator of the all-reduce layer.

Which communicator: on shm, the worker's own serves. Its sums go under their own tag, so into segments of
their own, apart from the gradient buckets, which a background thread reduces while backward goes on.
gloo and nccl run one group's collectives in the order a process issues them, whatever their tags, and the
bucket thread's order against the model's would differ from rank to rank, pairing the wrong buffers or
deadlocking. So there the sums get a group of their own (`<group>-sync`), joined at the first sum, which every
rank reaches at the same point of its first forward: a Trainer worker's (`own_communicator`), and a `launch`
rank's too, where DistributedDataParallel's bucket thread reduces on the launch's communicator (loop.py).
"""

from distgraph.errors import DistributedError

TAG = "sync"


class CommGroup:
    """rank, world_size and `all_reduce_sum(array)` (the sum over the ranks, in rank order on shm) over the
    communicator `comm()` returns, made on first use."""

    def __init__(self, rank, world_size, comm):
        self.rank, self.world_size, self._comm = rank, world_size, comm

    def all_reduce_sum(self, array):
        return self._comm().allreduce([array], "sum", tag=TAG)[0]


def own_communicator(config, rank, world_size, shared):
    """The communicator for a Trainer worker's SyncBatchNorm sums, given its all-reduce `config` and its
    gradients' communicator `shared()` (see the module doc)."""
    from distgraph.distributed.allreduce import make_allreduce

    backend = config.get("backend", "auto")
    if backend == "store":
        raise DistributedError(
            "SyncBatchNorm: the workers do not meet in an all-reduce with allreduce='store' (the stores sum "
            "the gradients); use allreduce='gloo' across nodes or 'auto' / 'shm' on one node"
        )
    if backend == "shm" or (backend == "auto" and not str(config.get("device", "cpu")).startswith("cuda")):
        return shared()
    options = {k: v for k, v in config.items() if k != "group"}
    return make_allreduce(rank, world_size, group=f"{config.get('group', 'distgraph')}-sync", **options)


class SyncGroup(CommGroup):
    """The CommGroup of SyncBatchNorm's sums in a `launch` rank: over `own_communicator(config, ...)`, made at the
    first sum; `close()` closes it when it is a group of its own."""

    def __init__(self, config, rank, world_size, shared):
        super().__init__(rank, world_size, self._communicator)
        self._config, self._shared, self._made = config, shared, None

    def _communicator(self):
        if self._made is None:
            self._made = own_communicator(self._config, self.rank, self.world_size, self._shared)
        return self._made

    def close(self):
        if self._made is not None and self._made is not self._shared():
            self._made.close()
