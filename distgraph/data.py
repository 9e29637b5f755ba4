"""Datasets and loaders with PyTorch's names: TensorDataset, Subset, random_split, DataLoader.

A TensorDataset (or a Subset of one) gives a whole batch with one fancy-index per tensor (no
per-sample Python loop). Any other map-style dataset — a list, a Dataset whose `__getitem__` takes one
int — is read sample by sample and collated as torch's `default_collate` does: tensors and arrays are
stacked, Python ints become int64 and floats float64 tensors, dicts, tuples and lists are collated
field by field, strings stay lists. Shuffling uses distgraph's seeded generator, so `dg.manual_seed`
fixes the batch order.
"""

import math
import operator
from collections.abc import Mapping, Sequence

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops.creation import generator
from distgraph.ops.shape import stack


class Dataset:
    """Map-style dataset: `__getitem__` and `__len__`."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


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


def _gathers_batches(dataset):
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


def default_collate(batch):
    """Merge a list of samples into a batch, as torch.utils.data.default_collate."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch, lambda: stack(batch))
    if isinstance(elem, np.ndarray | np.generic):
        return _stack(batch, lambda: Tensor(np.stack([np.asarray(b) for b in batch])))
    if isinstance(elem, bool | int | float):  # bool before int: a bool batch is a bool tensor
        kind = bool if isinstance(elem, bool) else np.int64 if isinstance(elem, int) else np.float64
        return Tensor(np.asarray(batch, dtype=kind))
    if isinstance(elem, str | bytes):
        return list(batch)
    if isinstance(elem, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise ShapeError("DataLoader: each sample of a batch must have the same number of fields")
        fields = [default_collate(list(samples)) for samples in zip(*batch)]
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise DTypeError(
        f"DataLoader: cannot collate samples of type {type(elem).__name__} "
        "(tensors, arrays, numbers, str, dicts, tuples or lists)"
    )


def _stack(batch, make):
    shapes = {tuple(np.shape(b)) for b in batch}
    if len(shapes) != 1:
        raise ShapeError(f"DataLoader: cannot stack samples of different shapes {sorted(shapes)}")
    return make()


class DataLoader:
    """Iterate a dataset in batches: batch_size (None: one sample at a time), shuffle (seeded), drop_last."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False):
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)):
            raise ValueError(f"DataLoader: batch_size must be a positive int or None, got {batch_size!r}")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int or None, got {batch_size!r}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last

    def __len__(self):
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = generator(CPU).permutation(n) if self.shuffle else np.arange(n)
        if self.batch_size is None:  # torch: no batching, the samples themselves
            for i in order:
                yield self.dataset[int(i)]
            return
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                return
            if _gathers_batches(self.dataset):
                yield self.dataset[idx]
            else:
                yield default_collate([self.dataset[int(i)] for i in idx])
