"""How one batch is read from a dataset: the same code in the main process and in a worker process.

The main process decides *which* batch (an index, or a list of indices, from the sampler); a fetcher
turns it into the batch. Map-style, as torch: the list through `dataset.__getitems__` when the dataset
has one, else each index through `dataset[i]`, then collate_fn (or, for a TensorDataset whose class
keeps distgraph's __getitem__, with the default collation, one fancy-index per tensor: the same
result; see `dataset.batch_gatherer`). Iterable-style: the "index" is how many samples to take (the
batch size, or None without auto-batching) from this process's own iterator of the dataset; when that
iterator ends the fetcher raises StopIteration, and a last short batch is dropped with drop_last, as
torch's fetchers do.
"""

from distgraph.data.dataset import IterableDataset, batch_gatherer


class MapFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, gather):
        self.dataset, self.auto_collation, self.collate_fn, self.gather = dataset, auto_collation, collate_fn, gather
        self.getitems = getattr(dataset, "__getitems__", None)  # torch: a falsy one (None) opts out

    def fetch(self, index):
        if not self.auto_collation:  # torch: no auto-batching, each sample through collate_fn
            return self.collate_fn(self.dataset[index])
        if self.gather is not None:
            return self.gather(index)
        if self.getitems:
            return self.collate_fn(self.getitems(index))
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
    (then a TensorDataset's batch may be gathered in one index)."""
    if isinstance(dataset, IterableDataset):
        return IterableFetcher(dataset, auto_collation, collate_fn, drop_last)
    gather = batch_gatherer(dataset) if default_collate and auto_collation else None
    return MapFetcher(dataset, auto_collation, collate_fn, gather)
