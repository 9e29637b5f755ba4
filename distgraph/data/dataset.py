"""Datasets with PyTorch's names: Dataset, IterableDataset, TensorDataset, StackDataset, Subset,
ConcatDataset, ChainDataset, random_split.

The DataLoader reads a batch as torch does: `dataset.__getitems__(indices)` when the dataset defines
it, else `dataset[i]` per sample. One exception, invisible in the result: a TensorDataset (or Subsets
of one, at any depth) whose classes keep this module's own `__getitem__` answers the whole batch with
one fancy-index per tensor (`batch_gatherer`). A subclass that overrides `__getitem__` (a per-sample
transform) is read per sample, so its code sees one index at a time, as in torch.
"""

import array
import bisect
import itertools
import math
import operator

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.data.sampler import as_generator, stream_of
from distgraph.errors import ConfigError, DTypeError, IndexOutOfRangeError, ShapeError, SizeMismatchError


class Dataset:
    """Map-style dataset: subclasses give `__getitem__` and usually `__len__` (as torch's base class, it
    defines no `__len__`, so `len()` of one without it is a TypeError)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__}: subclasses of Dataset should implement __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """Iterable-style dataset: subclasses give `__iter__` (the samples of one pass, in order).

    A DataLoader with num_workers > 0 iterates one copy per worker: `__iter__` splits the work with
    `get_worker_info()` (its `id` and `num_workers`), or every worker yields every sample. A `__len__`
    is optional; `len(loader)` needs it (a TypeError without, as in torch)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__}: subclasses of IterableDataset should implement __iter__")

    def __add__(self, other):
        return ChainDataset([self, other])


class ChainDataset(IterableDataset):
    """IterableDatasets one after another (torch's): each pass iterates them in order, so the chain is
    lazy and each of them is read as it comes; its length is the sum of theirs."""

    def __init__(self, datasets):
        self.datasets = datasets

    def _checked(self):
        for i, dataset in enumerate(self.datasets):
            if not isinstance(dataset, IterableDataset):
                raise DTypeError(
                    f"ChainDataset only supports IterableDataset, got {type(dataset).__name__} at position {i}"
                )
            yield dataset

    def __iter__(self):
        for dataset in self._checked():
            yield from dataset

    def __len__(self):
        return sum(len(dataset) for dataset in self._checked())


class TensorDataset(Dataset):
    """Samples are the i-th rows of each tensor (or array); all must share their first dimension."""

    def __init__(self, *tensors):
        tensors = tuple(t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in tensors)
        if not tensors or any(t.ndim == 0 for t in tensors):
            raise ShapeError(
                f"TensorDataset: needs at least one tensor, each with a first (sample) dimension; "
                f"got shapes {[t.shape for t in tensors]}"
            )
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) != 1:
            raise SizeMismatchError(f"TensorDataset: size mismatch between tensors, first dims {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of `dataset` at `indices`, kept as given (random_split gives lists of ints, as torch's
    does, so `a.indices + b.indices` joins them); a numpy integer index reaches `dataset` as an int."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __getitem__(self, index):
        if isinstance(index, list):  # torch: a list of positions is one read of the dataset
            return self.dataset[[self.indices[i] for i in index]]
        if isinstance(index, np.ndarray):  # positions as an array: one fancy-index of the indices
            return self.dataset[np.asarray(self.indices)[index]]
        return self.dataset[_scalar(self.indices[index])]

    def __getitems__(self, positions):
        """The samples at a batch's positions (torch's protocol): through the dataset's own __getitems__
        when it has one; per sample through `self[i]` when a subclass overrides __getitem__ (torch
        refuses such a subclass; reading per sample runs its code as written)."""
        if type(self).__getitem__ is not Subset.__getitem__:
            return [self[i] for i in positions]
        indices = [_scalar(self.indices[i]) for i in positions]
        getitems = getattr(self.dataset, "__getitems__", None)
        if callable(getitems):
            return getitems(indices)
        return [self.dataset[i] for i in indices]

    def __len__(self):
        return len(self.indices)


class StackDataset(Dataset):
    """Several datasets of one length side by side: sample i is the tuple of their i-th samples
    (`StackDataset(a, b)`) or a dict of them by name (`StackDataset(image=a, text=b)`), as torch's."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError(
                "Supported either ``tuple``- (via ``args``) or``dict``- (via ``kwargs``) like input/output, "
                "but both types are given."
            )
        if not args and not kwargs:
            raise ValueError("At least one dataset should be passed")
        parts = args or list(kwargs.values())
        self._length = len(parts[0])
        if any(self._length != len(d) for d in parts):
            raise ValueError("Size mismatch between datasets")
        self.datasets = args or kwargs

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {k: d[index] for k, d in self.datasets.items()}
        return tuple(d[index] for d in self.datasets)

    def __getitems__(self, indices):
        """One batch: each dataset read once through its own `__getitems__` where it has one."""
        named = isinstance(self.datasets, dict)
        columns = {}
        for key, d in self.datasets.items() if named else enumerate(self.datasets):
            if callable(getattr(d, "__getitems__", None)):
                items = d.__getitems__(indices)
                if len(items) != len(indices):
                    raise ValueError(
                        f"Nested dataset's output size mismatch. Expected {len(indices)}, got {len(items)}"
                    )
                columns[key] = items
            else:
                columns[key] = [d[i] for i in indices]
        if named:
            return [{k: col[j] for k, col in columns.items()} for j in range(len(indices))]
        return [tuple(col[j] for col in columns.values()) for j in range(len(indices))]

    def __len__(self):
        return self._length


def _scalar(index):
    return int(index) if isinstance(index, np.integer) else index


class ConcatDataset(Dataset):
    """The samples of several map-style datasets, one after another (`a + b` builds one, as in torch).

    `cumulative_sizes[k]` is the number of samples in datasets[0..k]; an index finds its dataset by
    bisection. The DataLoader reads it per sample (its members may each read differently)."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ConfigError("ConcatDataset: datasets should not be empty; pass at least one dataset")
        for i, d in enumerate(self.datasets):
            if isinstance(d, IterableDataset):
                raise ConfigError(
                    f"ConcatDataset: datasets[{i}] is an IterableDataset ({type(d).__name__}), which has no "
                    "indices; concatenate map-style datasets, or chain iterables in an IterableDataset's __iter__"
                )
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        index, n = operator.index(index), len(self)
        if not -n <= index < n:  # (torch: a ValueError below -n, an IndexError from n on)
            raise IndexOutOfRangeError(f"ConcatDataset: index {index} is out of range for {n} samples")
        if index < 0:
            index += n
        k = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[k][index - (self.cumulative_sizes[k - 1] if k else 0)]


def _reads_as(dataset, cls):
    """True when `dataset` is a `cls` whose class keeps cls's own __getitem__ and __getitems__."""
    kind = type(dataset)
    return (
        isinstance(dataset, cls)
        and kind.__getitem__ is cls.__getitem__
        and getattr(kind, "__getitems__", None) is getattr(cls, "__getitems__", None)
    )


def batch_gatherer(dataset):
    """A function from a batch's indices to the batch a default-collating DataLoader yields (a list of
    one fancy-index per tensor), for a TensorDataset or Subsets of one that read as this module does;
    None for any other dataset (read per sample). The Subsets' indices become arrays here, once."""
    chain = []
    while _reads_as(dataset, Subset):
        chain.append(np.asarray(dataset.indices, dtype=np.int64))
        dataset = dataset.dataset
    if not _reads_as(dataset, TensorDataset):
        return None
    base = dataset
    size = len(chain[0]) if chain else len(base)  # what the sampler's indices index

    def gather(index):
        index = _sample_indices(index, size)
        for indices in chain:
            index = indices[index]
        return list(base[index])  # a list, as default_collate makes of a batch of tuples

    return gather


def _sample_indices(index, size):
    """A batch's indices from the sampler as an int64 array, or an error naming the sampler: an index past the
    dataset's end (a sampler longer than the dataset) failed in getitem; a float one is refused with torch's
    IndexError (flooring 1.7 to row 1 would load the wrong sample silently). Bools count as 0 and 1, as in
    Python's own indexing. array('q') takes only objects with __index__, so the common list of ints is
    checked and converted in one C loop; anything else goes through numpy."""
    try:
        index = np.frombuffer(array.array("q", index), dtype=np.int64)
    except (TypeError, OverflowError):
        index = _integer_array(index)
    outside = (index >= size) | (index < -size)
    if outside.any():
        raise IndexOutOfRangeError(
            f"DataLoader: the sampler gave index {int(index[outside][0])}, but the dataset has {size} samples: a "
            f"sampler or batch_sampler must yield indices in [0, {size}) (one built for a longer dataset?)"
        )
    return index


def _integer_array(index):
    """index (an array, a tensor, nested lists) as int64, refusing floats as torch's indexing does."""
    try:
        index = np.asarray(index)
    except (TypeError, ValueError):
        raise DTypeError(f"DataLoader: the sampler must yield integer indices, got {index!r:.80}") from None
    if index.dtype.kind in "fc" and index.size:
        flat = index.ravel()
        odd = flat[flat != np.round(flat.real)]
        raise IndexOutOfRangeError(
            f"DataLoader: the sampler gave index {(odd if odd.size else flat)[0].item()!r} ({index.dtype}): only "
            "integers are valid indices into a TensorDataset, as in torch; make the sampler yield ints"
        )
    if index.dtype.kind not in "iub" and index.size:
        raise DTypeError(f"DataLoader: the sampler must yield integer indices, got {index.tolist()!r:.80}")
    return index.astype(np.int64, copy=False)


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping subsets of the given lengths, or of fractions summing to 1 (as torch:
    the samples that flooring leaves over go one each to the first subsets, round-robin). `generator`
    is a dg.Generator, numpy Generator or int seed, as the samplers take; None draws from the global one."""
    generator = as_generator(generator, "random_split")
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1.0) and sum(lengths) <= 1:
        if not all(0 <= f <= 1 for f in lengths):
            raise ShapeError(f"random_split: fractions {lengths} must each lie between 0 and 1")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        try:
            counts = [operator.index(c) for c in lengths]
        except TypeError:
            raise ShapeError(f"random_split: lengths {lengths} must be ints or fractions summing to 1") from None
    if any(c < 0 for c in counts) or sum(counts) != n:
        raise ShapeError(f"random_split: lengths {lengths} are not ≥ 0 or do not sum to the dataset size {n}")
    perm = stream_of(generator).permutation(n).tolist()
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start : start + c]))
        start += c
    return out
