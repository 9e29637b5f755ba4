"""RNN, LSTM and GRU over a PackedSequence, as torch: a packed output and each sequence's final state.

The packed batch is unpacked into its padded, length-sorted form (L, N, In) and the layers run over
it as over any padded batch (nn/rnn.py `RNNBase._layers`), told the lengths: a forward direction's
outputs at a sequence's valid steps never read past its end, so only its final state must be taken at
its true length; a reverse direction must start at each sequence's own last step, so its input is
flipped within each length, run forward and flipped back. The output is packed again with the same
index_select that packs any padded batch, which drops the padding positions and their garbage, so
gradients equal torch's. The host lengths come from batch_sizes, which always lives on the CPU.
"""

import numpy as np

from distgraph.errors import ShapeError
from distgraph.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from distgraph.ops.creation import tensor
from distgraph.ops.indexing import index_select


def _rows(x, positions):
    """x (L, N, *) read at flat step·N + b positions: one index_select over the (L·N, *) view."""
    return index_select(x.flatten(0, 1), 0, tensor(positions, dtype="int64", device=x.device))


def flip_steps(x, lengths):
    """x (L, N, *) with each sequence b's first lengths[b] steps reversed; padding steps stay put."""
    steps, batch = x.shape[0], x.shape[1]
    t, b = np.arange(steps)[:, None], np.arange(batch)[None, :]
    src = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # an involution: it undoes itself
    return _rows(x, (src * batch + b).reshape(-1)).unflatten(0, (steps, batch))


def last_steps(y, lengths):
    """y (L, N, *) read at each sequence's last valid step: (N, *)."""
    return _rows(y, (lengths - 1) * y.shape[1] + np.arange(y.shape[1]))


def packed_forward(rnn, packed, hx):
    """`rnn(packed, hx)`: (PackedSequence output, h_n or (h_n, c_n)), states in the caller's batch order."""
    name = type(rnn).__name__
    if packed.data.ndim != 2:
        raise ShapeError(f"{name}: packed input data must be 2-D (steps, input_size), got {tuple(packed.data.shape)}")
    rnn._check_input_size(packed.data)
    x, lengths = pad_packed_sequence(PackedSequence(packed.data, packed.batch_sizes))  # (L, N, In), sorted
    lengths = np.asarray(lengths.numpy())
    h0, c0 = rnn._initial(hx, x.shape[1], 2 if rnn.bidirectional else 1, False, x)
    order, back = packed.sorted_indices, packed.unsorted_indices
    if hx is not None and order is not None:  # the caller's states follow the caller's batch order
        h0 = index_select(h0, 1, order)
        c0 = None if c0 is None else index_select(c0, 1, order)
    out, h_n, c_n = rnn._layers(x, h0, c0, lengths)
    if back is not None:
        h_n = index_select(h_n, 1, back)
        c_n = None if c_n is None else index_select(c_n, 1, back)
    data = pack_padded_sequence(out, lengths).data
    out = PackedSequence(data, packed.batch_sizes, order, back)
    return (out, (h_n, c_n)) if rnn.mode == "LSTM" else (out, h_n)
