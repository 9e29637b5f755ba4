"""DataLoader: torch.utils.data.DataLoader's options and rules, in this process or in worker processes.

The loader is the composition torch builds: a sampler chooses the indices (SequentialSampler, or
RandomSampler when shuffle=True), a BatchSampler groups them (built from batch_size and drop_last
unless a batch_sampler is given), and collate_fn turns each group's samples into the batch
(default_collate). With batch_size=None nothing is grouped: each sample goes through collate_fn
alone (default_convert). When the collation is the default and the dataset is a TensorDataset (or a
Subset of one) whose class does not override __getitem__, a batch is one fancy-index per tensor
instead of a per-sample loop: the same result (`dataset.batch_gatherer`).

An IterableDataset has no indices: batches are its samples in order, batch_size at a time (the last
one shorter, or dropped with drop_last); it takes no sampler, batch_sampler or shuffle.

With num_workers > 0 the batches are built in worker processes (`worker_pool.py`, `worker.py`); the
batches and their order are those of num_workers=0 for a map-style dataset.
"""

import itertools
import multiprocessing
import numbers
from multiprocessing.context import BaseContext

from distgraph.data.collate import default_collate, default_convert
from distgraph.data.dataset import IterableDataset
from distgraph.data.fetch import make_fetcher
from distgraph.data.sampler import BatchSampler, RandomSampler, SequentialSampler, as_generator, stream_of
from distgraph.data.worker_pool import MultiProcessIter
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


def _check_dataset(dataset, sampler, batch_sampler):
    """A map-style dataset needs __getitem__ (and __len__ for the default sampler), samplers must be iterable:
    else the first iteration failed with a bare TypeError ("object of type 'int' has no len()")."""
    if not isinstance(dataset, IterableDataset) and not hasattr(dataset, "__getitem__"):
        hint = (
            ": an iterator or generator is no dataset; wrap it in an IterableDataset whose __iter__ yields the samples"
            if hasattr(dataset, "__iter__")
            else ""
        )
        raise ConfigError(
            "DataLoader: dataset must be map-style (with __getitem__ and __len__: a TensorDataset, a list, ...) or "
            f"an IterableDataset, got {type(dataset).__name__}{hint}"
        )
    for name, value in (("sampler", sampler), ("batch_sampler", batch_sampler)):
        if value is not None and not hasattr(value, "__iter__"):
            raise ConfigError(f"DataLoader: {name} must be an iterable of indices, got {type(value).__name__}")
    if sampler is None and batch_sampler is None and not isinstance(dataset, IterableDataset):
        if not hasattr(dataset, "__len__"):
            streams = hasattr(dataset, "__iter__")  # (torch's IterableDataset inherits a __getitem__ it never has)
            raise ConfigError(
                f"DataLoader: dataset {type(dataset).__name__} has no __len__, which the default sampler needs to "
                "draw its indices: "
                + (
                    "it iterates, so make it a distgraph.data.IterableDataset (its __iter__ yields the samples)"
                    if streams
                    else "give it __len__, or pass a sampler or batch_sampler"
                )
            )


def _check_iterable_options(shuffle, sampler, batch_sampler):
    """An IterableDataset has no indices to sample or shuffle (torch refuses these first)."""
    for name, value, unset in (("shuffle", shuffle, shuffle in (None, False)), ("sampler", sampler, sampler is None)):
        if not unset:
            raise ConfigError(
                f"DataLoader with IterableDataset: expected unspecified {name} option, but got {name}={value}"
            )
    if batch_sampler is not None:
        raise ConfigError(
            f"DataLoader with IterableDataset: expected unspecified batch_sampler option, but got batch_sampler={batch_sampler}"
        )


def _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers):
    """torch's rules for the multiprocessing options; returns prefetch_factor (2 by default with workers)."""
    if not isinstance(num_workers, numbers.Integral) or isinstance(num_workers, bool) or num_workers < 0:
        raise ConfigError(
            f"DataLoader: num_workers option should be a non-negative int; use num_workers=0 to disable "
            f"multiprocessing, got {num_workers!r}"
        )
    if not isinstance(timeout, numbers.Real) or timeout < 0:
        raise ConfigError(f"DataLoader: timeout option should be non-negative, got {timeout!r}")
    if num_workers == 0 and prefetch_factor is not None:
        raise ConfigError(
            "DataLoader: prefetch_factor option could only be specified in multiprocessing; let num_workers > 0 "
            "to enable multiprocessing, otherwise set prefetch_factor to None"
        )
    if num_workers > 0 and prefetch_factor is None:
        prefetch_factor = 2
    if prefetch_factor is not None and not (isinstance(prefetch_factor, numbers.Integral) and prefetch_factor > 0):
        raise ConfigError(f"DataLoader: prefetch_factor option should be a positive int, got {prefetch_factor!r}")
    if persistent_workers and num_workers == 0:
        raise ConfigError("DataLoader: persistent_workers option needs num_workers > 0")
    return prefetch_factor


def _as_context(context, num_workers):
    """A multiprocessing context from a start-method name or a context object (torch's rules)."""
    if context is None:
        return None
    if num_workers == 0:
        raise ConfigError(
            "DataLoader: multiprocessing_context can only be used with multi-process loading (num_workers > 0), "
            f"but got num_workers={num_workers}"
        )
    if isinstance(context, str):
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ConfigError(
                f"DataLoader: multiprocessing_context option should specify a valid start method in {methods!r}, "
                f"but got multiprocessing_context={context!r}"
            )
        return multiprocessing.get_context(context)
    if not isinstance(context, BaseContext):
        raise TypeError(
            "DataLoader: multiprocessing_context option should be a valid context object or a string specifying "
            f"the start method, but got multiprocessing_context={context!r}"
        )
    return context


class DataLoader:
    """Iterate a dataset in batches, as torch.utils.data.DataLoader.

    `generator` (a numpy Generator or an int seed, see `distgraph.data.sampler`) drives shuffle=True
    and the workers' base seed; without it both come from the generator `dg.manual_seed` seeds.

    num_workers > 0 builds batches in that many processes (each seeded from the base seed, see
    `distgraph.data.worker`; `get_worker_info()` tells a dataset which worker it is in), with
    `worker_init_fn(worker_id)`, `prefetch_factor` batches in flight per worker, `persistent_workers`
    kept between epochs, `timeout` seconds at most per batch and a `multiprocessing_context` (a start
    method name or a context). `pin_memory` (and `pin_memory_device`) are accepted for torch
    compatibility and do nothing: batches are numpy arrays on the host, with no pinned memory to use.
    """

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=None,
        sampler=None,
        batch_sampler=None,
        num_workers=0,
        collate_fn=None,
        pin_memory=False,
        drop_last=False,
        timeout=0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor=None,
        persistent_workers=False,
        pin_memory_device="",
        in_order=True,
    ):
        self.prefetch_factor = _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers)
        if isinstance(dataset, IterableDataset):
            _check_iterable_options(shuffle, sampler, batch_sampler)
        _check_dataset(dataset, sampler, batch_sampler)
        shuffle = bool(shuffle)
        _check_options(batch_size, shuffle, sampler, batch_sampler, drop_last)
        self.multiprocessing_context = _as_context(multiprocessing_context, num_workers)
        generator = as_generator(generator, "DataLoader")
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        if sampler is None and not isinstance(dataset, IterableDataset):
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and sampler is not None:
            batch_sampler = BatchSampler(sampler, int(batch_size), bool(drop_last))
        self.dataset, self.batch_size, self.drop_last, self.generator = dataset, batch_size, drop_last, generator
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.timeout, self.worker_init_fn = num_workers, timeout, worker_init_fn
        self.persistent_workers, self.in_order = persistent_workers, in_order
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        self.uses_default_collate = collate_fn is None
        if collate_fn is None:
            collate_fn = default_collate if self.auto_collation else default_convert
        self.collate_fn = collate_fn
        self._iterator = None

    @property
    def auto_collation(self):
        """True when samples are grouped into batches (batch_size or batch_sampler given)."""
        return self.batch_size is not None or self.batch_sampler is not None

    def index_sampler(self):
        """What the main process hands to the fetcher per batch: index lists (or single indices without
        auto-batching) from the samplers; for an IterableDataset, the batch size, endlessly (torch's
        infinite sampler): the dataset's own iterator decides when the epoch ends."""
        if isinstance(self.dataset, IterableDataset):
            return _EndlessBatchSizes(self.batch_size)
        return self.batch_sampler if self.batch_sampler is not None else self.sampler

    def __len__(self):
        """The number of batches; for an IterableDataset len(dataset) batched as torch counts it (a
        TypeError when the dataset has no __len__)."""
        if isinstance(self.dataset, IterableDataset):
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self.index_sampler())

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        generator = stream_of(self.generator)
        if not self.persistent_workers:
            return MultiProcessIter(self, generator)
        if self._iterator is None:  # persistent workers: one iterator, reset for each epoch
            self._iterator = MultiProcessIter(self, generator)
        else:
            self._iterator._reset(self)
        return self._iterator

    def _batches(self):
        """The batches of one pass in this process."""
        fetcher = make_fetcher(
            self.dataset, self.auto_collation, self.collate_fn, self.drop_last, self.uses_default_collate
        )
        iterable = isinstance(self.dataset, IterableDataset)
        for index in self.index_sampler():
            try:
                batch = fetcher.fetch(index)
            except StopIteration:
                if iterable:
                    return
                raise
            yield batch


class _EndlessBatchSizes:
    """An IterableDataset's index stream (torch's _InfiniteConstantSampler): its batch size, forever. It has
    no len, so neither has an iterator over such a loader, as in torch."""

    def __init__(self, batch_size):
        self.batch_size = batch_size

    def __iter__(self):
        return itertools.repeat(self.batch_size)

    def __len__(self):
        raise TypeError(
            "len() of a DataLoader iterator over an IterableDataset: its index stream is endless (as torch's); "
            "use len(loader), which counts len(dataset)"
        )


class _SingleProcessIter:
    """One pass of a DataLoader in this process: an iterator (not a bare generator) whose len is the number
    of batches, len of the index sampler, as torch's (tqdm(iter(loader)) and custom loops ask it)."""

    def __init__(self, loader):
        self._index_sampler, self._batches = loader.index_sampler(), loader._batches()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._batches)

    def __len__(self):
        return len(self._index_sampler)
