"""nn.utils.rnn: padded and packed batches of variable-length sequences, as torch.nn.utils.rnn.

A PackedSequence holds a batch's steps time-major with the sequences sorted by decreasing length:
`data` is step 0 of every sequence, then step 1 of those still running, and so on; `batch_sizes[t]`
counts the sequences still running at step t. Packing and unpacking are each one index_select (a
gather whose backward is a scatter-add), so gradients reach the padded input and the packed data
exactly as torch's do. The index arrays come from the lengths on the host, where torch keeps
`batch_sizes` too (on the CPU whatever the data's device).
"""

from collections import namedtuple
from collections.abc import Iterable

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops.creation import arange, full, tensor, zeros_like
from distgraph.ops.indexing import index_select, scatter
from distgraph.ops.regions import pad
from distgraph.ops.shape import cat, stack

__all__ = [
    "PackedSequence",
    "invert_permutation",
    "pack_padded_sequence",
    "pack_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpack_sequence",
    "unpad_sequence",
]


class PackedSequence(namedtuple("PackedSequence_", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A packed batch (see the module docstring); build it with pack_padded_sequence or pack_sequence."""

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        if batch_sizes is None:
            if not (isinstance(data, list | tuple) and len(data) == 2):
                raise AssertionError("Expected data to be a list or tuple of length 2")
            data, batch_sizes = data
        if batch_sizes.device.type != "cpu":
            raise ValueError(
                "batch_sizes should always be on CPU. Instances of PackedSequence should never be created manually. "
                "They should be instantiated by functions like pack_sequence and pack_padded_sequences in nn.utils.rnn."
            )
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """The data moved or cast as Tensor.to; the permutations follow the data's device, batch_sizes stays."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        move = lambda t: None if t is None else t.to(data.device)  # noqa: E731
        return type(self)(data, self.batch_sizes, move(self.sorted_indices), move(self.unsorted_indices))

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(dtype="float64")

    def float(self):
        return self.to(dtype="float32")

    def half(self):
        return self.to(dtype="float16")

    def long(self):
        return self.to(dtype="int64")

    def int(self):
        return self.to(dtype="int32")

    @property
    def is_cuda(self):
        return self.data.is_cuda


def invert_permutation(permutation):
    """The inverse permutation (None stays None): out[permutation[i]] = i."""
    if permutation is None:
        return None
    return scatter(zeros_like(permutation), 0, permutation, arange(permutation.numel(), device=permutation.device))


def _host_lengths(lengths):
    if not isinstance(lengths, Tensor):
        return np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.ndim != 1:
        raise RuntimeError(
            f"'lengths' argument should be a 1D CPU int64 tensor, but got {lengths.ndim}D {lengths.device.type} "
            f"{lengths.dtype.name} tensor"
        )
    return np.asarray(lengths.to("cpu").numpy()).astype(np.int64)


def _packed_positions(batch_sizes, batch):
    """Flat (t·batch + b) positions, in packed order, of the steps a (T, batch, *) padded tensor holds."""
    return np.concatenate([t * batch + np.arange(n) for t, n in enumerate(batch_sizes)]).astype(np.int64)


def _index(array, like):
    return tensor(array, dtype="int64", device=like.device)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded (T, B, *) batch (B, T, * with batch_first) whose sequence b has lengths[b] steps."""
    lengths = _host_lengths(lengths)
    if input.ndim < 2:
        raise ShapeError(
            f"pack_padded_sequence: expected a padded input of shape (T, B, *) or (B, T, *), got {tuple(input.shape)}"
        )
    sorted_indices = None
    batch_dim = 0 if batch_first else 1
    if not enforce_sorted:
        order = np.argsort(-lengths, kind="stable")
        lengths, sorted_indices = lengths[order], _index(order, input)
        input = index_select(input, batch_dim, sorted_indices)
    if input.numel() == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    steps, batch = input.shape[1 - batch_dim], input.shape[batch_dim]
    if len(lengths) != batch:
        raise RuntimeError(
            f"Expected `len(lengths)` to be equal to batch_size, but got {len(lengths)} (batch_size={batch})"
        )
    if lengths[-1] <= 0:
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
        )
    if np.any(lengths[1:] > lengths[:-1]):
        raise RuntimeError(
            "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
            "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this requirement if "
            "you do not need ONNX exportability."
        )
    if lengths[0] > steps:
        raise ShapeError(
            f"pack_padded_sequence: a sequence length ({lengths[0]}) exceeds the padded input's {steps} steps"
        )
    if batch_first:
        input = input.transpose(0, 1)
    batch_sizes = (lengths[None, :] > np.arange(lengths[0])[:, None]).sum(1)
    data = index_select(input.flatten(0, 1), 0, _index(_packed_positions(batch_sizes, batch), input))
    return PackedSequence(data, tensor(batch_sizes, dtype="int64"), sorted_indices, None)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Undo pack_padded_sequence: (padded, lengths), the batch back in its original order."""
    batch_sizes = np.asarray(sequence.batch_sizes.numpy()).astype(np.int64)
    steps = len(batch_sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence in input, but got "
                f"total_length={total_length} and max sequence length being {steps}"
            )
        steps = total_length
    data = sequence.data
    batch = int(batch_sizes[0])
    # every padded position reads the packed row it holds, or the one padding row appended after them
    where = np.full(steps * batch, data.shape[0], dtype=np.int64)
    where[_packed_positions(batch_sizes, batch)] = np.arange(data.shape[0])
    filler = full((1, *data.shape[1:]), padding_value, dtype=data.dtype, device=data.device)
    padded = index_select(cat([data, filler]), 0, _index(where, data)).unflatten(0, (steps, batch))  # (T, B, *)
    if batch_first:
        padded = padded.transpose(0, 1)
    lengths = (batch_sizes[None, :] > np.arange(batch)[:, None]).sum(1)
    if sequence.unsorted_indices is not None:
        unsorted = sequence.unsorted_indices
        padded = index_select(padded, 0 if batch_first else 1, unsorted)
        lengths = lengths[np.asarray(unsorted.to("cpu").numpy())]
    return padded, tensor(lengths, dtype="int64")


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack tensors of shape (L_i, *) into (L_max, B, *) ((B, L_max, *) with batch_first), padded."""
    if not isinstance(sequences, Iterable):
        raise RuntimeError(
            f"pad_sequence: Expected iterable for input sequences, but got arg of type: {type(sequences)}"
        )
    sequences = tuple(sequences)
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise RuntimeError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    first = sequences[0]
    for i, s in enumerate(sequences):
        if s.ndim == 0 or tuple(s.shape[1:]) != tuple(first.shape[1:]):
            raise ShapeError(
                f"pad_sequence: every sequence must have shape (L, *{tuple(first.shape[1:])}) like sequence 0, "
                f"got {tuple(s.shape)} for sequence {i}"
            )
    longest = max(s.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        gap = longest - s.shape[0]
        s = s.to(first.dtype)  # the batch takes the first sequence's dtype, as torch's
        padded.append(pad(s, (0, 0) * (s.ndim - 1) + ((0, gap) if padding_side == "right" else (gap, 0)),
                          value=padding_value) if gap else s)  # fmt: skip
    return stack(padded, 0 if batch_first else 1)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """Split a padded batch back into its sequences: a list of (lengths[b], *) tensors."""
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    lengths = _host_lengths(lengths)
    if len(lengths) != padded_sequences.shape[0]:
        raise ShapeError(
            f"unpad_sequence: got {len(lengths)} lengths for a batch of {padded_sequences.shape[0]} sequences"
        )
    return [seq[: int(n)] for seq, n in zip(padded_sequences.unbind(0), lengths, strict=True)]


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of (L_i, *) tensors (sorted by decreasing length unless enforce_sorted=False)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """Undo pack_sequence: the list of sequences, in their original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
