"""Datasets and loaders with PyTorch's names: TensorDataset, DataLoader, random_split.

Batches are gathered with one fancy-index per tensor (no per-sample Python loop), and shuffling uses
distgraph's seeded generator, so `dg.manual_seed` fixes the batch order.
"""

import math

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU
from distgraph.errors import ShapeError
from distgraph.ops.creation import generator


class Dataset:
    """Map-style dataset: `__getitem__` and `__len__`."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are the i-th rows of each tensor (or array); all must share their first dimension."""

    def __init__(self, *tensors):
        sizes = {t.shape[0] for t in tensors}
        if len(sizes) != 1:
            raise ShapeError(
                f"TensorDataset: size mismatch between tensors, first dims {[t.shape[0] for t in tensors]}"
            )
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in tensors)

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths):
    """Split into non-overlapping subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    if all(0 < x < 1 for x in lengths) and math.isclose(sum(lengths), 1.0):
        counts = [int(math.floor(n * f)) for f in lengths]
        counts[0] += n - sum(counts)
    else:
        counts = list(lengths)
    if sum(counts) != n:
        raise ShapeError(f"random_split: lengths {lengths} do not sum to the dataset size {n}")
    perm = generator(CPU).permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start : start + c]))
        start += c
    return out


class DataLoader:
    """Iterate a dataset in batches: batch_size, shuffle (seeded), drop_last."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False):
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = generator(CPU).permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                return
            yield self.dataset[idx]
