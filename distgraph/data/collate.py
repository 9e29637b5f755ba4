"""How a DataLoader turns what the dataset returns into what it yields, as torch.utils.data does.

`default_collate` merges the list of samples of one batch: tensors and arrays are stacked, Python ints
become int64 and floats float64 tensors, dicts, tuples and lists are collated field by field, strings
stay lists. `default_convert` is what an unbatched loader (batch_size=None) applies to each sample:
numpy arrays and scalars become tensors, containers are converted field by field (a tuple becomes a
list, as torch keeps it for backward compatibility), anything else is left as it is.
"""

import copy
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops.shape import stack


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


def default_convert(data):
    """Convert numpy arrays and scalars inside one sample to tensors, as torch's default_convert."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray | np.generic) and not isinstance(data, np.str_ | np.bytes_):
        return data if data.dtype.kind in "OSUV" else Tensor(np.asarray(data))
    if isinstance(data, Mapping):
        converted = {key: default_convert(data[key]) for key in data}
        if isinstance(data, MutableMapping):
            clone = copy.copy(data)
            clone.update(converted)
            return clone
        return converted
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if isinstance(data, MutableSequence):
            clone = copy.copy(data)
            for i, d in enumerate(data):
                clone[i] = default_convert(d)
            return clone
        return [default_convert(d) for d in data]
    return data
