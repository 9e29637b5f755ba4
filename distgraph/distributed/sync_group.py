"""The process group a model's layers reach inside a distributed worker (ops/collective.py): the sums of
nn.SyncBatchNorm, over a communicator of the all-reduce layer.

Which communicator: on shm, the worker's own serves. Its sums go under their own tag, so into segments of
their own, apart from the gradient buckets, which a background thread reduces while backward goes on.
gloo and nccl run one group's collectives in the order a process issues them, and the bucket thread's
order against the model's would differ from rank to rank, pairing the wrong buffers. So there the sums get
a group of their own (`<group>-sync`), joined at the first sum, which every rank reaches at the same point of
its first forward. A `launch` function has no bucket thread: its one communicator serves.
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
