"""What a Trainer trains on: (inputs, targets) host arrays from the forms `fit` and `evaluate` take, and
each epoch's batches.

Arrays are reshuffled per epoch from (seed, epoch) — a permutation drawn from
`numpy.random.default_rng([seed, epoch])` — so a resumed run sees exactly the batches an uninterrupted
run would have seen.

An iterable of batches (a DataLoader with any sampler, collate_fn or worker processes, a generator)
is read whole and its batches concatenated into one (x, y) pair plus index ranges that keep its batch
sizes and order, so the local and Ray paths see the same arrays. Each batch must therefore be an
(inputs, targets) pair of arrays or tensors with a batch dimension; anything else (a dict, a triple, a
single sample from batch_size=None) is a ConfigError that says what the batch was.

Inputs given as numpy arrays of another floating dtype than the model's parameters (numpy's float64 for a
float32 model) are cast to the parameters' dtype (`float_dtype`), as a torch user casts numpy data
(`torch.from_numpy(x).float()`); inputs given as Tensors are kept, and a model that does not take their dtype
refuses them as torch's would (F.linear: "expected m1 and m2 to have the same dtype").
"""

from collections.abc import Iterator

import numpy as np

from distgraph.backend import to_host
from distgraph.errors import ConfigError


def model_float_dtype(model):
    """The dtype of the model's first floating parameter (None without one): numpy inputs are cast to it."""
    params = model.parameters() if hasattr(model, "parameters") else ()
    return next((p.array.dtype for p in params if p.array.dtype.kind == "f"), None)


def _inputs(item, float_dtype):
    """A batch's inputs on the host; raw numpy floats of another dtype cast to `float_dtype` (module docstring)."""
    arr = to_host(item)
    if float_dtype is not None and isinstance(item, np.ndarray) and arr.dtype.kind == "f" and arr.dtype != float_dtype:
        return arr.astype(float_dtype)
    return arr


def as_arrays(data, float_dtype=None):
    """(x, y) on the host from a pair of arrays/tensors, a TensorDataset, or an iterable of (x, y)
    batches (a DataLoader, a generator), whose batches are concatenated into one dataset."""
    batches = _loader_batches(data)
    if batches is not None:
        return _concatenated(batches, float_dtype)[:2]
    x, y = data.tensors if hasattr(data, "tensors") else data
    x, y = _inputs(x, float_dtype), to_host(y)
    if len(x) != len(y):
        raise ConfigError(f"Trainer data: {len(x)} inputs but {len(y)} targets")
    return _nonempty(x), y


def validation_arrays(val_data, x, y, evaluate, float_dtype=None):
    """`fit`'s val_data as host arrays, read once per fit (a generator was exhausted by the first epoch's
    validation, and the second epoch's failed). Samples shaped unlike the training data's are tried with
    `evaluate(x, y)` on one of them before any step (a model may take other lengths): a val_data the model
    cannot take failed only after the first epoch had trained. Those shaped alike are not, so the model and
    loss_fn see no call a torch loop would not make."""
    vx, vy = as_arrays(val_data, float_dtype)
    if vx.shape[1:] == x.shape[1:] and vy.shape[1:] == y.shape[1:]:
        return vx, vy
    try:
        evaluate(vx[:1], vy[:1])
    except Exception as exc:
        raise ConfigError(
            f"Trainer.fit: val_data's samples have inputs of shape {vx.shape[1:]} and targets {vy.shape[1:]}, the "
            f"training data's {x.shape[1:]} and {y.shape[1:]}, and fail in the model or loss_fn "
            f"({type(exc).__name__}: {exc}): give val_data in the training data's form"
        ) from exc
    return vx, vy


def _nonempty(x):
    """x, or a ConfigError when it holds no sample: an epoch of nothing recorded a loss of 0.0."""
    if len(x) == 0:
        raise ConfigError("Trainer data: no samples (an empty dataset); fit and evaluate need at least one")
    return x


def check_data(data):
    """What `as_arrays` checks of `data`, without iterating an iterable of batches: a fit with no epoch
    left to train takes no pass of a DataLoader (a shuffled pass drawn there was missing from the next)."""
    if not _is_batches(data):
        as_arrays(data)


def _is_batches(data):
    """True for an iterable of batches, False for (inputs, targets) or a TensorDataset, else a ConfigError."""
    if hasattr(data, "tensors") or (isinstance(data, tuple | list) and len(data) == 2 and not _is_batch_pair(data[0])):
        return False
    if hasattr(data, "shape") or (isinstance(data, tuple | list) and data and all(hasattr(d, "shape") for d in data)):
        # one array, or inputs and targets with a third array: read as batches, "got a ndarray" named no mistake
        got = (
            f"one {type(data).__name__} of shape {tuple(data.shape)}"
            if hasattr(data, "shape")
            else f"a {type(data).__name__} of {len(data)} arrays"
        )
        raise ConfigError(
            f"Trainer data: got {got}; give (inputs, targets): two arrays or tensors with the same first dimension "
            "(or a TensorDataset, or an iterable of (inputs, targets) batches)"
        )
    if not hasattr(data, "__iter__") or isinstance(data, str | bytes | dict):
        raise ConfigError(
            f"Trainer data must be (inputs, targets), a TensorDataset or an iterable of (inputs, targets) "
            f"batches, got {type(data).__name__}"
        )
    return True


def _loader_batches(data):
    """The list of (x, y) batches `data` yields when it is an iterable of batches, else None."""
    if not _is_batches(data):
        return None
    batches = list(data)
    if not batches:
        raise ConfigError("Trainer data: the iterable of batches yielded no batch")
    for b in batches:
        if not (isinstance(b, tuple | list) and len(b) == 2):
            raise ConfigError(
                f"Trainer data: an iterable of batches must yield (inputs, targets) pairs, got {_describe(b)}; "
                "a DataLoader's collate_fn must return (inputs, targets)"
            )
    return batches


def _describe(batch):
    if isinstance(batch, dict):
        return f"a dict with keys {list(batch)}"
    if isinstance(batch, tuple | list):
        return f"a {type(batch).__name__} of {len(batch)} items"
    name = type(batch).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _concatenated(batches, float_dtype=None):
    """(x, y, the loader's batches as index arrays into them: its order and batch sizes)."""
    xs, ys = [_inputs(b[0], float_dtype) for b in batches], [to_host(b[1]) for b in batches]
    for part, arrays, items in (("inputs", xs, (b[0] for b in batches)), ("targets", ys, (b[1] for b in batches))):
        for arr, item in zip(arrays, items):  # the batches are concatenated: each needs a batch dimension
            if arr.ndim == 0 or arr.dtype == object:
                raise ConfigError(
                    f"Trainer data: a batch's {part} must be an array or tensor with a batch dimension, got "
                    f"{_describe(item) if arr.dtype == object else 'shape ()'} (a DataLoader with batch_size=None "
                    "yields single samples; its collate_fn must return (inputs, targets) arrays)"
                )
    for i, (bx, by) in enumerate(zip(xs, ys)):
        if len(bx) != len(by):
            raise ConfigError(f"Trainer data: a batch has {len(bx)} inputs but {len(by)} targets")
        for part, arr, first in (("inputs", bx, xs[0]), ("targets", by, ys[0])):  # np.concatenate's bare error
            if arr.shape[1:] != first.shape[1:]:
                raise ConfigError(
                    f"Trainer data: batch {i}'s {part} have shape {arr.shape}, batch 0's {first.shape}; the Trainer "
                    "concatenates the batches into one array, so they must agree beyond the batch dimension (pad "
                    "every batch to one size, e.g. in the collate_fn, and give targets one shape)"
                )
    ends = np.cumsum([len(b) for b in xs])
    return _nonempty(np.concatenate(xs)), np.concatenate(ys), [np.arange(a, b) for a, b in zip([0, *ends[:-1]], ends)]


class EpochData:
    """What each epoch trains on. Arrays: the same (x, y), batches reshuffled per epoch from (seed,
    epoch), so a resumed run sees the same ones. An iterable of batches (a DataLoader) is used as PyTorch
    uses one: each epoch iterates it again (its own shuffling, augmentation and batch sizes; `fit`'s
    batch_size does not apply), its batches taken in its order; a one-pass iterator (a generator) is
    read once and its batches replayed every epoch."""

    def __init__(self, data, batch_size, seed, first_epoch=0, float_dtype=None):
        self.batch_size, self.seed, self.float_dtype = batch_size, seed, float_dtype
        self.loader = self.ranges = None
        batches = _loader_batches(data)
        if batches is None:
            self.x, self.y = as_arrays(data, float_dtype)
            return
        self.loader = None if isinstance(data, Iterator) else data  # a one-pass iterator: its batches, kept
        self.x, self.y, self.ranges = _concatenated(batches, float_dtype)
        # the epoch whose iteration self.x holds: this pass is the one `fit` trains `first_epoch` on (a second
        # `fit` or a resume goes on from its epoch; taking the next pass for it skipped one of the loader's)
        self.read_for = first_epoch

    def epoch(self, epoch):
        """(x, y, the epoch's batches as index arrays, True when x and y are new since the last call)."""
        if self.ranges is None:
            return self.x, self.y, epoch_batches(len(self.x), self.batch_size, self.seed, epoch), False
        if self.loader is None or self.read_for == epoch:
            return self.x, self.y, self.ranges, False
        self.x, self.y, self.ranges = _concatenated(_loader_batches(self.loader), self.float_dtype)
        self.read_for = epoch
        return self.x, self.y, self.ranges, True


def _is_batch_pair(item):
    return isinstance(item, tuple | list) and len(item) == 2


def epoch_batches(n, batch_size, seed, epoch):
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
