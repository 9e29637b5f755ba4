"""torch.nn.functional.ctc_loss: argument checks, the unbatched form and torch's reductions around the
`ctc_loss` op (ops/ctc.py), which computes each sequence's negative log-likelihood.

torch's 'mean' divides each sequence's loss by its target length (at least 1), then averages over the
batch; 'sum' adds them up. Lengths may be tensors, lists or tuples; they are read once, as ints.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.creation import tensor
from distgraph.ops.ctc import ctc_nll

_REDUCTIONS = ("none", "mean", "sum")


def _ints(lengths, name):
    """A tuple of ints from a tensor (0-d or 1-d), a number or a sequence of numbers."""
    if isinstance(lengths, Tensor):
        if lengths.array.dtype.kind not in "iu":
            raise DTypeError(f"ctc_loss: {name} must be an integer tensor, got {lengths.dtype.name}")
        return tuple(int(v) for v in np.asarray(lengths.__array__()).reshape(-1))
    if isinstance(lengths, int | np.integer):
        return (int(lengths),)
    return tuple(int(v) for v in lengths)


def _check_lengths(input_lengths, target_lengths, n, t_max):
    for name, lengths in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if len(lengths) != n:
            raise ShapeError(f"ctc_loss: {name} must be of size batch_size {n}, got {len(lengths)} values")
        if lengths and min(lengths) < 0:
            raise InputRangeError(f"ctc_loss: expected {name} to have value at least 0, but got value {min(lengths)}")
    if input_lengths and max(input_lengths) > t_max:
        raise InputRangeError(
            f"ctc_loss: expected input_lengths to have value at most {t_max} (log_probs' time dimension), "
            f"but got value {max(input_lengths)}"
        )


def _check_targets(targets, target_lengths, n, classes):
    if targets.array.dtype.kind not in "iub":
        targets = ew.cast(targets, np.int64)  # torch reads float targets as class indices too
    if targets.ndim == 2:
        if targets.shape[0] != n or targets.shape[1] < max(target_lengths, default=0):
            raise ShapeError(
                f"ctc_loss: padded targets {tuple(targets.shape)} must be (N={n}, S) with S at least the largest "
                f"target length {max(target_lengths, default=0)}"
            )
        padded = np.asarray(targets.__array__())
        labels = np.concatenate([padded[b, :tl] for b, tl in enumerate(target_lengths)] + [padded[:0, 0]])
    elif targets.ndim == 1:
        if targets.shape[0] != sum(target_lengths):
            raise ShapeError(
                f"ctc_loss: concatenated targets of size {targets.shape[0]} must hold sum(target_lengths) = "
                f"{sum(target_lengths)} labels"
            )
        labels = np.asarray(targets.__array__())
    else:
        raise ShapeError(f"ctc_loss: targets must be (N, S) padded or 1-d concatenated, got {tuple(targets.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise IndexOutOfRangeError(f"ctc_loss: target label {int(bad)} is out of range for {classes} classes")
    return targets


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """CTC loss of log_probs (T, N, C) (or (T, C) unbatched) against targets (N, S) padded or 1-d concatenated."""
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"ctc_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if log_probs.array.dtype not in (np.float32, np.float64):
        raise DTypeError(f"ctc_loss: log_probs must be float32 or float64, got {log_probs.dtype.name}")
    if log_probs.ndim not in (2, 3):
        raise ShapeError(f"ctc_loss: log_probs must be (T, N, C) or unbatched (T, C), got {tuple(log_probs.shape)}")
    unbatched = log_probs.ndim == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
    t_max, n, classes = log_probs.shape
    if not 0 <= blank < classes:
        raise InputRangeError(f"ctc_loss: blank {blank} must be in the label range [0, {classes})")
    input_lengths, target_lengths = _ints(input_lengths, "input_lengths"), _ints(target_lengths, "target_lengths")
    _check_lengths(input_lengths, target_lengths, n, t_max)
    targets = _check_targets(targets, target_lengths, n, classes)
    loss = ctc_nll(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity)  # (N,)
    if reduction == "mean":
        den = tensor(np.maximum(target_lengths, 1), dtype=log_probs.dtype, device=log_probs.device)
        return red.mean(ew.div(loss, den))
    if reduction == "sum":
        return red.sum(loss)
    return loss.reshape(()) if unbatched else loss
