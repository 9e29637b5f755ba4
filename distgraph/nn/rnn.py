"""RNN, LSTM, GRU (num_layers, batch_first, bidirectional, dropout, bias) and their cells, as torch.

Parameter names, shapes, gate order (LSTM: i, f, g, o; GRU: r, z, n) and initialization
U(−1/√hidden, 1/√hidden) follow torch, so state dicts load in both directions. Each layer and
direction is one matmul for every step's input projection (x·W_ihᵀ) and one fused op for the
recurrence (`ops.recurrent.rnn_layer`, with its own BPTT op for backward), so a sequence costs a
handful of ops, not ~15 per step (ops/recurrent_kernels.py has what makes those ops quick). The cells
are composed from per-step ops.

LSTM's `proj_size` (torch's projection: h_t = W_hr·(o_t ⊙ tanh c_t), weight_hr_l{k} of shape (P, H),
h and the output of size P) runs as per-step cells plus one matmul per step: the fused op has no
projection, so a projected LSTM pays the per-step overhead the fused op avoids.

A PackedSequence input (nn/utils/rnn.py) runs through nn/rnn_packed.py: the same layers, told each
sequence's length.
"""

import math
import warnings

from distgraph.errors import DTypeError, ShapeError
from distgraph.nn import functional as F
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.nn.rnn_packed import flip_steps, last_steps, packed_forward
from distgraph.nn.utils.rnn import PackedSequence
from distgraph.ops import same_dtype
from distgraph.ops.creation import empty, zeros
from distgraph.ops.recurrent import GATES, gru_cell, lstm_cell, rnn_cell, rnn_layer
from distgraph.ops.shape import cat, narrow, stack


class RNNBase(Module):
    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, nonlinearity="tanh", proj_size=0, device=None, dtype=None):  # fmt: skip
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{mode}: {name} must be an int greater than zero, got {value!r}")
        if proj_size < 0:
            raise ValueError(f"{mode}: proj_size should be a positive integer or zero to disable projections")
        if proj_size and mode != "LSTM":
            raise ValueError(f"{mode}: proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{mode}: proj_size has to be smaller than hidden_size")
        self.proj_size = proj_size
        if mode == "RNN":
            if nonlinearity not in ("tanh", "relu"):
                raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r} (tanh or relu)")
            mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        if not 0 <= dropout <= 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.nonlinearity = nonlinearity
        gate = GATES[mode] * hidden_size
        dirs = 2 if bidirectional else 1
        out_size = proj_size or hidden_size  # what h carries: the projection's size when there is one
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = input_size if layer == 0 else out_size * dirs
                setattr(self, "weight_ih" + sfx, Parameter(empty(gate, in_size, device=device, dtype=dtype)))
                setattr(self, "weight_hh" + sfx, Parameter(empty(gate, out_size, device=device, dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + sfx, Parameter(empty(gate, device=device, dtype=dtype)))
                    setattr(self, "bias_hh" + sfx, Parameter(empty(gate, device=device, dtype=dtype)))
                if proj_size:
                    setattr(
                        self, "weight_hr" + sfx, Parameter(empty(proj_size, hidden_size, device=device, dtype=dtype))
                    )
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self):
        """torch packs the weights into one cuDNN buffer here; distgraph has nothing to pack."""

    @property
    def all_weights(self):
        """The parameters of each layer and direction, in torch's order (weight_ih, weight_hh[, biases][, weight_hr])."""
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        names += ["weight_hr"] if self.proj_size else []
        return [
            [getattr(self, f"{n}_l{layer}" + ("_reverse" if d else "")) for n in names]
            for layer in range(self.num_layers)
            for d in range(2 if self.bidirectional else 1)
        ]

    def _weights(self, layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, n + sfx) if self.bias or n.startswith("weight") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            check_dtype(self, input.data, self.weight_ih_l0)
            return packed_forward(self, input, hx)
        unbatched = input.ndim == 2
        if input.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected 2-D or 3-D input, got {tuple(input.shape)}")
        self._check_input_size(input)
        check_dtype(self, input, self.weight_ih_l0)
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # (L, N, In)
        if x.shape[0] == 0:
            raise ShapeError(
                f"{type(self).__name__}: expected sequence length to be larger than 0, got input {tuple(input.shape)}"
            )
        h0, c0 = self._initial(hx, x.shape[1], 2 if self.bidirectional else 1, unbatched, x)
        x, h_n, c_n = self._layers(x, h0, c0)
        out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n if c_n is None else c_n.squeeze(1)
        return (out, (h_n, c_n)) if self.mode == "LSTM" else (out, h_n)

    def _check_input_size(self, input):
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )

    def _layers(self, x, h0, c0, lengths=None):
        """Every layer and direction over x (L, N, In): (output (L, N, D·H), h_n, c_n or None).

        With `lengths` (host ints, sequence b has lengths[b] steps, the rest is padding: a packed input),
        the reverse direction reads each sequence from its own last step (flip_steps) and the final states
        are each sequence's state at its true length (last_steps); positions past a length hold garbage.
        """
        steps, hid = x.shape[0], self.proj_size or self.hidden_size  # hid: h's size
        dirs = 2 if self.bidirectional else 1
        lstm = self.mode == "LSTM"
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                k = layer * dirs + d
                if self.mode == "GRU":  # b_hn sits inside r·(W_hn·h + b_hn): it goes to the op
                    xw = F.linear(x, w_ih, b_ih)  # (L, N, 3H): every step's input projection in one matmul
                    rest = (w_hh, b_hh if b_hh is not None else zeros(w_hh.shape[0], dtype=x.dtype, device=x.device))
                else:  # b_hh only adds: fold it into the projection
                    xw = F.linear(x, w_ih, b_ih + b_hh if self.bias else None)
                    rest = (c0[k], w_hh) if lstm else (w_hh,)
                flip = bool(d) and lengths is not None  # run the flipped sequences forward instead
                if flip:
                    xw = flip_steps(xw, lengths)
                reverse = bool(d) and not flip
                if self.proj_size:  # (L, N, P + H): [h_t | c_t] at every step
                    w_hr = getattr(self, f"weight_hr_l{layer}" + ("_reverse" if d else ""))
                    y = _projected_lstm(xw, h0[k], c0[k], w_hh, w_hr, reverse)
                else:
                    y = rnn_layer(self.mode, xw, h0[k], *rest, reverse=reverse)  # (L, N, H), LSTM (L, N, 2H)
                last = y[0 if reverse else steps - 1] if lengths is None else last_steps(y, lengths)  # (N, ·)
                y = flip_steps(y, lengths) if flip else y
                outs.append(narrow(y, 2, 0, hid) if lstm else y)
                h_n.append(last[:, :hid])
                if lstm:
                    c_n.append(last[:, hid:])
            x = outs[0] if dirs == 1 else cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, stack(h_n, 0), stack(c_n, 0) if lstm else None

    def _initial(self, hx, batch, dirs, unbatched, x):
        shape = (self.num_layers * dirs, batch, self.proj_size or self.hidden_size)
        c_shape = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            z = zeros(*shape, dtype=x.dtype, device=x.device)
            return z, (zeros(*c_shape, dtype=x.dtype, device=x.device) if self.proj_size else z)
        name = type(self).__name__
        if self.mode == "LSTM":
            if not isinstance(hx, tuple | list) or len(hx) != 2:
                raise ShapeError(f"{name}: the initial state must be a tuple (h_0, c_0), got {type(hx).__name__}")
            h, c = hx
        else:
            h, c = hx, None
        if unbatched:
            h = h.unsqueeze(1)
            c = c.unsqueeze(1) if c is not None else None
        for label, t, want in (("hidden", h, shape), ("cell", c, c_shape)):  # c_0 is read row by row
            if t is not None and tuple(t.shape) != want:
                raise ShapeError(f"{name}: expected {label} size {want}, got {tuple(t.shape)}")
            if t is not None and t.dtype != x.dtype:  # torch refuses it in its first product (no promotion)
                same_dtype.linear(t, self.weight_hh_l0, getattr(self, "bias_hh_l0", None))
        return h, c

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:  # torch's order: right after the sizes
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


def check_dtype(module, input, weight):
    """torch refuses an input whose dtype is not the weights' (no silent promotion), in its words."""
    if input.dtype != weight.dtype:
        raise DTypeError(
            f"{type(module).__name__}: input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})"
        )


def _projected_lstm(xw, h, c, w_hh, w_hr, reverse):
    """One direction of a projected LSTM layer from per-step ops: [h_t | c_t] stacked, (L, N, P + H)."""
    steps = xw.unbind(0)
    out = [None] * len(steps)
    for t in range(len(steps) - 1, -1, -1) if reverse else range(len(steps)):
        h, c = lstm_cell(steps[t], (h, c), w_hh)
        h = F.linear(h, w_hr)
        out[t] = cat((h, c), -1)
    return stack(out, 0)


class RNN(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("RNN", *args, **kwargs)


class LSTM(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("GRU", *args, **kwargs)


class RNNCellBase(Module):
    """The cells' base (torch's): weight_ih (num_chunks·hidden, input), weight_hh (num_chunks·hidden, hidden)
    and their biases, one chunk per gate."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = num_chunks * hidden_size
        self.weight_ih = Parameter(empty(g, input_size, device=device, dtype=dtype))
        self.weight_hh = Parameter(empty(g, hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(g, device=device, dtype=dtype))
            self.bias_hh = Parameter(empty(g, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _h0(self, input, hx, states=1):
        """The given state (`states` tensors: LSTMCell's (h, c)) or zeros, each checked against
        (*input.shape[:-1], hidden_size); the input's shape and dtype are checked first, naming the cell."""
        name = type(self).__name__
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: expected input of shape (N, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(input.shape)}"
            )
        check_dtype(self, input, self.weight_ih)
        want = (*input.shape[:-1], self.hidden_size)
        if hx is None:
            h = zeros(*want, dtype=input.dtype, device=input.device)
            return h if states == 1 else (h,) * states
        if states > 1 and (not isinstance(hx, tuple | list) or len(hx) != states):
            raise ShapeError(f"{name}: expected hx to be a tuple (h, c) of two tensors, got {type(hx).__name__}")
        for label, t in zip(("hx", "cx"), (hx,) if states == 1 else hx):
            if tuple(t.shape) != want:
                raise ShapeError(
                    f"{name}: expected {label} of shape {want} (input {tuple(input.shape)}, hidden_size "
                    f"{self.hidden_size}), got {tuple(t.shape)}"
                )
            if t.dtype != input.dtype:  # torch refuses it in its first product (no promotion)
                same_dtype.linear(t, self.weight_hh, self.bias_hh)
        return hx


class RNNCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r} (tanh or relu)")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        h = self._h0(input, hx)
        xw = F.linear(input, self.weight_ih, self.bias_ih)
        return rnn_cell(xw, h, self.weight_hh, self.bias_hh, relu=self.nonlinearity == "relu")


class LSTMCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        hx = self._h0(input, hx, states=2)
        return lstm_cell(F.linear(input, self.weight_ih, self.bias_ih), hx, self.weight_hh, self.bias_hh)


class GRUCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        h = self._h0(input, hx)
        return gru_cell(F.linear(input, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)
