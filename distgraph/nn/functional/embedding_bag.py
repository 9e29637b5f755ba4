"""embedding_bag: the sum, mean or max of the embeddings of each bag of indices, as torch's.

Bags are given by `offsets` into a 1-D input (bag b spans offsets[b] up to the next offset, the last
one up to the end; include_last_offset reads the last offset as that end, and torch's CPU kernel
still runs the last bag to the input's end), or are the rows of a 2-D input.
Entries equal to padding_idx are left out of their bag (and of its mean's count); an empty bag is 0.

The bag layout is integer bookkeeping done on the host; the values go through registered ops (one
embedding lookup, a scatter-add per bag for sum and mean, a max over a padded (bags, longest, dim)
gather for max), so the weight and per_sample_weights get torch's gradients, max's to the first
maximum of each bag and dim.

`torch.embedding_bag` (ATen's form: weight first, mode as 0 sum / 1 mean / 2 max) also returns the
bookkeeping torch's kernel keeps for backward, with its values: offset2bag (the bag of each index),
bag_size (the entries counted in each bag; zeros in sum mode) and max_indices (max mode: the weight row
each bag's maximum came from, per dim; mean mode: bag_size again; sum mode: zeros).
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.nn.functional.layers import _embedding_renorm_
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing, layers, same_dtype
from distgraph.ops import reduction as red
from distgraph.ops.creation import full, zeros
from distgraph.ops.shape import cat

_MODES = ("sum", "mean", "max")


def _bags(input, offsets, include_last_offset, op):
    """(flat indices, host offsets) for 1-D input with offsets or 2-D input (one bag per row)."""
    if input.ndim == 2:
        if offsets is not None:
            raise ConfigError(
                f"{op}: if input is 2D, then offsets has to be None, as input is treated is a mini-batch of fixed "
                f"length sequences. However, found offsets of type {type(offsets).__name__}"
            )
        n, length = input.shape
        return input.reshape(-1), np.arange(0, n * length, max(length, 1))[:n], False
    if input.ndim != 1:
        raise ShapeError(f"{op}: input has to be 1D or 2D Tensor, but got Tensor of dimension {input.ndim}")
    if offsets is None:
        raise ConfigError(f"{op}: offsets has to be a 1D Tensor but got None")
    if offsets.ndim != 1:
        raise ShapeError(f"{op}: offsets has to be a 1D Tensor, got shape {tuple(offsets.shape)}")
    if offsets.array.dtype.kind not in "iu":
        raise DTypeError(f"{op}: offsets must be an integer tensor, got {offsets.dtype.name}")
    offs = np.asarray(offsets.array.get() if hasattr(offsets.array, "get") else offsets.array).astype(np.int64)
    if offs.size and offs[0] != 0:
        raise InputRangeError(f"{op}: offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
                         f"position 0. However, got {offs[0]}")  # fmt: skip
    if offs.size and (offs[-1] > input.shape[0] or np.any(np.diff(offs) < 0)):
        raise InputRangeError(f"{op}: offsets must be non-decreasing and at most the input's length {input.shape[0]}, got "
                         f"{offs.tolist()}")  # fmt: skip
    return input, offs, include_last_offset


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False, mode="mean",
                  sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):  # fmt: skip
    if mode == "max" and scale_grad_by_freq:  # torch.nn.functional's check (ATen's form has none)
        raise ConfigError("embedding_bag: max mode does not support scaling the gradient by the frequency")
    return _embedding_bag(input, weight, offsets, max_norm, norm_type, scale_grad_by_freq, mode, sparse,
                          per_sample_weights, include_last_offset, padding_idx)[0]  # fmt: skip


def aten_embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                       per_sample_weights=None, include_last_offset=False, padding_idx=None):  # fmt: skip
    """torch.embedding_bag: (output, offset2bag, bag_size, max_indices), see the module docstring."""
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise ConfigError("embedding_bag: `mode` must be sum, mean, or max.")
    out, bag, counts, max_rows = _embedding_bag(indices, weight, offsets, None, 2, scale_grad_by_freq, _MODES[mode],
                                                sparse, per_sample_weights, include_last_offset, padding_idx)  # fmt: skip
    dev = weight.device
    if mode == 0:  # torch's sum kernels keep neither: zeros, one per bag, or per offset (include_last_offset's
        # last too) from the forward-only kernel torch picks when neither weight nor per_sample_weights needs grad
        grads = weight.requires_grad or (per_sample_weights is not None and per_sample_weights.requires_grad)
        sizes = max_rows = np.zeros(len(counts) if grads else offsets.shape[0], np.int64)
    else:
        sizes = counts
    aux = (bag, sizes, sizes if mode == 1 else max_rows)
    return (out, *(Tensor(dev.xp.asarray(a.astype(np.int64)), device=dev) for a in aux))


def _embedding_bag(input, weight, offsets, max_norm, norm_type, scale_grad_by_freq, mode, sparse, per_sample_weights,
                   include_last_offset, padding_idx):  # fmt: skip
    """(output, the bag of each index, the entries counted per bag, max mode's weight row per bag and dim)."""
    op = "embedding_bag"
    if weight.ndim != 2:
        raise ShapeError(f"{op}: weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    if sparse:
        raise NotImplementedError(f"{op}: sparse gradients are not supported (distgraph has no sparse tensors)")
    if mode not in _MODES:
        raise ConfigError(f"{op}: mode has to be one of sum, mean or max, got {mode!r}")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"{op}: per_sample_weights was not None. per_sample_weights is only supported for "
                                  f"mode='sum' (got mode='{mode}')")  # fmt: skip
    if input.array.dtype.kind not in "iu":
        raise DTypeError(f"{op}: input must hold indices (an integer dtype), got {input.dtype.name}")
    if per_sample_weights is not None and per_sample_weights.array.dtype != weight.array.dtype:  # torch's words
        kinds = [f"torch.{same_dtype.scalar(t)}Tensor" for t in (weight, per_sample_weights)]
        raise DTypeError(f"Expected tensor for argument #1 'weight' to have the same type as tensor for argument #1 "
                         f"'per_sample_weights'; but type {kinds[0]} does not equal {kinds[1]} (while checking "
                         f"arguments for embedding_bag)")  # fmt: skip
    if per_sample_weights is not None and tuple(per_sample_weights.shape) != tuple(input.shape):
        raise ShapeError(f"{op}: per_sample_weights {tuple(per_sample_weights.shape)} must have the input's shape "
                         f"{tuple(input.shape)}")  # fmt: skip
    flat, offs, last = _bags(input, offsets, include_last_offset, op)
    num, dim = weight.shape
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise IndexOutOfRangeError(f"{op}: padding_idx {padding_idx} must be within num_embeddings {num}")
        padding_idx %= num
    ids = np.asarray(flat.array.get() if hasattr(flat.array, "get") else flat.array).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise IndexOutOfRangeError(f"{op}: index {bad} is out of range for {num} embeddings")
    if max_norm is not None:
        _embedding_renorm_(weight, flat, max_norm, norm_type)
    n_bags = max(len(offs) - 1, 0) if last else len(offs)
    # the last bag runs to the input's end, even past a smaller last offset (include_last_offset), as torch's CPU
    ends = np.append(offs[1:n_bags], len(ids))[:n_bags]
    bag = np.repeat(np.arange(n_bags), ends - offs[:n_bags])  # the bag of each position up to the last end
    pos = np.arange(len(bag))
    keep = pos if padding_idx is None else pos[ids[: len(bag)] != padding_idx]
    dev = weight.device
    kept = Tensor(dev.xp.asarray(keep), device=dev)
    rows = layers.embedding(indexing.index_select(flat, 0, kept), weight, None, scale_grad_by_freq)  # (K, dim)
    if per_sample_weights is not None:
        rows = ew.mul(rows, indexing.index_select(per_sample_weights.reshape(-1), 0, kept).unsqueeze(1))
    counts = np.bincount(bag[keep], minlength=n_bags)
    if mode == "max":
        out, row_of_max = _bag_max(rows, bag[keep], counts, n_bags, dim, dev)
        return out, bag, counts, np.append(ids[keep], 0)[row_of_max]  # an empty bag's (the −inf row's) is 0
    target = Tensor(dev.xp.asarray(np.repeat(bag[keep][:, None], dim, axis=1)), device=dev)
    out = indexing.scatter_add(zeros(n_bags, dim, dtype=rows.dtype, device=dev), 0, target, rows)
    if mode == "mean":
        out = ew.div(out, Tensor(dev.xp.asarray(np.maximum(counts, 1)[:, None], dtype=out.array.dtype), device=dev))
    return out, bag, counts, None


def _bag_max(rows, bag_of_row, counts, n_bags, dim, dev):
    """Per bag and dim, the first maximum: rows gathered into (bags, longest, dim), padded with −inf; and the
    kept row it came from (host array, (bags, dim))."""
    longest = int(counts.max()) if n_bags and counts.size else 0
    slot = np.full((n_bags, max(longest, 1)), len(bag_of_row))  # the −inf row appended below
    rank = np.arange(len(bag_of_row)) - np.repeat(np.cumsum(counts) - counts, counts)
    slot[bag_of_row, rank] = np.arange(len(bag_of_row))
    pad = full((1, dim), -np.inf, dtype=rows.dtype, device=dev)
    table = cat([rows, pad], 0)
    index = Tensor(dev.xp.asarray(slot.reshape(-1)), device=dev)
    gathered = indexing.index_select(table, 0, index).reshape(n_bags, slot.shape[1], dim)
    best, arg = red.max(gathered, dim=1)
    empty = Tensor(dev.xp.asarray((counts == 0)[:, None]), device=dev)
    arg = np.asarray(arg.array.get() if hasattr(arg.array, "get") else arg.array)
    return ew.where(empty, ew.const(0, best), best), np.take_along_axis(slot, arg, 1)
