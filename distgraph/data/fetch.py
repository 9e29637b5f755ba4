"""How one batch is read from a dataset: the same code in the main process and in a worker process.

The main process decides *which* batch (an index, or a list of indices, from the sampler); a fetcher
turns it into the batch. Map-style: each index through `dataset[i]`, then collate_fn (or, for a
TensorDataset with the default collation, one fancy-index per tensor: the same result). Iterable-style:
the "index" is how many samples to take (the batch size, or None without auto-batching) from this
process's own iterator of the dataset; when that iterator ends the fetcher raises StopIteration, and a
last short batch is dropped with drop_last, as torch's fetchers do.
"""

import numpy as np

from distgraph.data.dataset import IterableDataset, gathers_batches


class MapFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, whole_batches):
        self.dataset, self.auto_collation, self.collate_fn = dataset, auto_collation, collate_fn
        self.whole_batches = whole_batches

    def fetch(self, index):
        if not self.auto_collation:  # torch: no auto-batching, each sample through collate_fn
            return self.collate_fn(self.dataset[index])
        if self.whole_batches:
            return self.dataset[np.asarray(index, dtype=np.int64)]
        return self.collate_fn([self.dataset[i] for i in index])


class IterableFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.dataset_iter = iter(dataset)
        self.auto_collation, self.collate_fn, self.drop_last = auto_collation, collate_fn, drop_last
        self.ended = False

    def fetch(self, batch_size):
        """The next batch of `batch_size` samples (one sample when not auto-batching); StopIteration at
        the end."""
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            return self.collate_fn(next(self.dataset_iter))
        samples = []
        for _ in range(batch_size):
            try:
                samples.append(next(self.dataset_iter))
            except StopIteration:
                self.ended = True
                break
        if not samples or (self.drop_last and len(samples) < batch_size):
            raise StopIteration
        return self.collate_fn(samples)


def make_fetcher(dataset, auto_collation, collate_fn, drop_last, default_collate):
    """The fetcher for this dataset's kind; `default_collate` says collate_fn is the loader's default
    (then a TensorDataset's batch is gathered in one index)."""
    if isinstance(dataset, IterableDataset):
        return IterableFetcher(dataset, auto_collation, collate_fn, drop_last)
    return MapFetcher(dataset, auto_collation, collate_fn, default_collate and gathers_batches(dataset))
