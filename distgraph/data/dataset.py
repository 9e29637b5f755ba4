"""Datasets with PyTorch's names: Dataset, IterableDataset, TensorDataset, Subset, random_split.

A TensorDataset (or a Subset of one) answers `dataset[index_array]` with the whole batch — one
fancy-index per tensor — which the DataLoader uses instead of a per-sample Python loop when it
collates by default (`gathers_batches`).
"""

import math
import operator

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU
from distgraph.errors import ShapeError
from distgraph.ops.creation import generator


class Dataset:
    """Map-style dataset: subclasses give `__getitem__` and usually `__len__` (as torch's base class, it
    defines no `__len__`, so `len()` of one without it is a TypeError)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__}: subclasses of Dataset should implement __getitem__")


class IterableDataset(Dataset):
    """Iterable-style dataset: subclasses give `__iter__` (the samples of one pass, in order).

    A DataLoader with num_workers > 0 iterates one copy per worker: `__iter__` splits the work with
    `get_worker_info()` (its `id` and `num_workers`), or every worker yields every sample. A `__len__`
    is optional; `len(loader)` needs it (a TypeError without, as in torch)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__}: subclasses of IterableDataset should implement __iter__")


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
            raise ShapeError(f"TensorDataset: size mismatch between tensors, first dims {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def gathers_batches(dataset):
    """True when `dataset[index_array]` is the whole batch (TensorDataset, Subsets of one)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, TensorDataset)


def random_split(dataset, lengths):
    """Split into non-overlapping subsets of the given lengths, or of fractions summing to 1 (as torch:
    the samples that flooring leaves over go one each to the first subsets, round-robin)."""
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
    perm = generator(CPU).permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start : start + c]))
        start += c
    return out
