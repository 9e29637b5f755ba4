"""DataLoader: torch.utils.data.DataLoader's options and rules, in this process (no worker processes).

The loader is the composition torch builds: a sampler chooses the indices (SequentialSampler, or
RandomSampler when shuffle=True), a BatchSampler groups them (built from batch_size and drop_last
unless a batch_sampler is given), and collate_fn turns each group's samples into the batch
(default_collate). With batch_size=None nothing is grouped: each sample goes through collate_fn
alone (default_convert). When the collation is the default and the dataset is a TensorDataset (or a
Subset of one), a batch is one fancy-index per tensor instead of a per-sample loop: the same result.
"""

import numbers

import numpy as np

from distgraph.data.collate import default_collate, default_convert
from distgraph.data.dataset import gathers_batches
from distgraph.data.sampler import BatchSampler, RandomSampler, SequentialSampler
from distgraph.errors import ConfigError


def _check_options(batch_size, shuffle, sampler, batch_sampler, drop_last):
    """torch's rules for combining the options; each error names the options that clash."""
    if batch_size is not None and not (
        isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool) and batch_size > 0
    ):
        raise ConfigError(f"DataLoader: batch_size must be a positive int or None, got {batch_size!r}")
    if sampler is not None and shuffle:
        raise ConfigError("DataLoader: the sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
        raise ConfigError(
            "DataLoader: the batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
        )
    if batch_sampler is None and batch_size is None and drop_last:
        raise ConfigError("DataLoader: batch_size=None disables auto-batching and is mutually exclusive with drop_last")


class DataLoader:
    """Iterate a map-style dataset in batches, as torch.utils.data.DataLoader with num_workers=0.

    `generator` (a numpy Generator or an int seed, see `distgraph.data.sampler`) drives shuffle=True;
    without it the order comes from the generator `dg.manual_seed` seeds.
    """

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=False,
        sampler=None,
        batch_sampler=None,
        collate_fn=None,
        drop_last=False,
        generator=None,
    ):
        _check_options(batch_size, shuffle, sampler, batch_sampler, drop_last)
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, int(batch_size), bool(drop_last))
        self.dataset, self.batch_size, self.drop_last, self.generator = dataset, batch_size, drop_last, generator
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self._default_collate = collate_fn is None
        if collate_fn is None:
            collate_fn = default_collate if batch_sampler is not None else default_convert
        self.collate_fn = collate_fn

    def __len__(self):
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def __iter__(self):
        if self.batch_sampler is None:  # torch: no auto-batching, each sample through collate_fn
            for i in self.sampler:
                yield self.collate_fn(self.dataset[i])
            return
        whole_batches = self._default_collate and gathers_batches(self.dataset)
        for indices in self.batch_sampler:
            if whole_batches:
                yield self.dataset[np.asarray(indices, dtype=np.int64)]
            else:
                yield self.collate_fn([self.dataset[i] for i in indices])
