"""How a DataLoader turns what the dataset returns into what it yields, as torch.utils.data does.

`default_collate` merges the list of samples of one batch: tensors and arrays are stacked, Python
numbers become a tensor of the dtype torch.tensor infers from the whole batch (float64 when the first
is a float, as torch's float rule), dicts, namedtuples, tuples and lists are collated field by field
(a tuple becomes a list; a mapping, a namedtuple or a list keeps its type, as torch keeps them).
Strings and bytes (numpy's too) are returned as the batch itself, as torch's: the field of a tuple sample
is then a tuple (the transposed column), that of a dict sample or a top-level batch a list. `default_convert` is what an unbatched loader (batch_size=None)
applies to each sample: numpy arrays and scalars become tensors, containers are converted field by
field (a tuple becomes a list, as torch keeps it for backward compatibility), anything else is left
as it is.
"""

import copy
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops.creation import tensor
from distgraph.ops.shape import stack


def default_collate(batch):
    """Merge a list of samples into a batch, as torch.utils.data.default_collate."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch, lambda: stack(batch))
    if isinstance(elem, str | bytes):  # numpy's str_ and bytes_ too (they subclass str and bytes)
        return batch
    if isinstance(elem, np.ndarray) and elem.dtype.kind in "OSUV":
        raise DTypeError(
            f"DataLoader: default_collate: cannot stack numpy arrays of dtype {elem.dtype.str} (strings or "
            "objects); return numbers from the dataset or give the DataLoader a collate_fn"
        )
    if isinstance(elem, np.ndarray | np.generic):
        return _stack(batch, lambda: Tensor(np.stack([np.asarray(b) for b in batch])))
    if isinstance(elem, float):  # torch: float64 whenever the first sample is a float
        return tensor(batch, dtype=dtypes.float64)
    if isinstance(elem, int):  # and bool: the dtype torch.tensor infers from all ([1, 2.5] is float32)
        return tensor(batch)
    if isinstance(elem, Mapping):
        for i, sample in enumerate(batch):  # else a bare KeyError (or TypeError) naming only the key
            if not isinstance(sample, Mapping) or any(key not in sample for key in elem):
                got = f"keys {list(sample)}" if isinstance(sample, Mapping) else f"a {type(sample).__name__}"
                raise ShapeError(
                    f"DataLoader: default_collate: sample {i} of the batch has {got}, sample 0 a dict with keys "
                    f"{list(elem)}; every sample must be a dict with those keys (or give the DataLoader a collate_fn)"
                )
        return _like_mapping(elem, {key: default_collate([sample[key] for sample in batch]) for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise ShapeError("DataLoader: each sample of a batch must have the same number of fields")
        fields = [default_collate(samples) for samples in zip(*batch)]
        return fields if isinstance(elem, tuple) else _like_sequence(elem, fields)
    raise DTypeError(
        f"DataLoader: cannot collate samples of type {type(elem).__name__} "
        "(tensors, arrays, numbers, str, dicts, tuples or lists)"
    )


def _like_mapping(elem, values):
    """`values` (a dict) in the type of the mapping `elem`, as torch rebuilds it: a copy of a mutable one
    updated (it may hold more than its items), a read-only one built from the dict, else the dict."""
    try:
        if isinstance(elem, MutableMapping):
            clone = copy.copy(elem)
            clone.update(values)
            return clone
        return type(elem)(values)
    except TypeError:
        return values


def _like_sequence(elem, values):
    """`values` (a list) in the type of the sequence `elem`, by torch's rule for mappings above."""
    try:
        if isinstance(elem, MutableSequence):
            clone = copy.copy(elem)
            for i, value in enumerate(values):
                clone[i] = value
            return clone
        return type(elem)(values)
    except TypeError:
        return values


def _stack(batch, make):
    shapes = {tuple(np.shape(b)) for b in batch}
    if len(shapes) != 1:
        raise ShapeError(f"DataLoader: cannot stack samples of different shapes {sorted(shapes)}")
    return make()


def default_convert(data):
    """Convert numpy arrays and scalars inside one sample to tensors, as torch's default_convert."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray | np.generic) and not isinstance(data, np.str_ | np.bytes_):
        return data if data.dtype.kind in "OSUV" else Tensor(np.asarray(data))
    if isinstance(data, Mapping):
        return _like_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return _like_sequence(data, [default_convert(d) for d in data])
    return data
