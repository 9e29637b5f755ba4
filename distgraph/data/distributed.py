"""DistributedSampler: each rank of a data-parallel loop visits its own share of the dataset, as
torch.utils.data.distributed.DistributedSampler.

Every rank draws the same permutation of all indices (seeded by `seed + epoch` modulo 2**64, so any
int seed works as in torch; never the global generator, which the ranks need not share), pads it with
its own head to a multiple of the ranks (or drops the tail with `drop_last=True`), and takes every
`num_replicas`-th index from its rank on: equal shares, together the whole dataset. `set_epoch(e)`
before each epoch gives a new order, as in torch.

`num_replicas` and `rank` default to the process group the distributed worker running this code installs
(`dg.distributed.launch`; ops/collective.py); outside one, rank 0 of 1, as `dg.distributed.rank()` is
there. The permutation is numpy's, not torch's: the same rules, other numbers (see sampler.py).
"""

import math
import numbers

import numpy as np

from distgraph.data.sampler import Sampler
from distgraph.errors import ConfigError
from distgraph.ops.collective import current_group


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class DistributedSampler(Sampler):
    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        group = current_group()
        if num_replicas is None:
            num_replicas = group.world_size if group is not None else 1
        if rank is None:
            rank = group.rank if group is not None else 0
        if not _is_int(num_replicas) or num_replicas < 1:
            raise ConfigError(f"DistributedSampler: num_replicas must be a positive int, got {num_replicas!r}")
        if not _is_int(rank) or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"DistributedSampler: Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]"
            )
        if not _is_int(seed):
            raise ConfigError(f"DistributedSampler: seed must be an int, got {seed!r}")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        n = len(dataset)
        if drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)  # the tail is dropped
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng((self.seed + self.epoch) % 2**64).permutation(n)
        else:
            indices = np.arange(n)
        if self.drop_last:
            indices = indices[: self.total_size]
        elif self.total_size > n:  # pad with the order's own head (repeated whole when it is shorter)
            indices = np.concatenate([indices] * math.ceil(self.total_size / max(n, 1)))[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """The epoch whose order the next iteration draws (call it before each epoch, as in torch)."""
        self.epoch = epoch
