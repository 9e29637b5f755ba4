"""RNN, LSTM, GRU (num_layers, batch_first, bidirectional, dropout, bias) and their cells, as torch.

Parameter names, shapes, gate order (LSTM: i, f, g, o; GRU: r, z, n) and initialization
U(−1/√hidden, 1/√hidden) follow torch, so state dicts load in both directions. Everything is composed
from differentiable ops, so gradients of any order come from the engine.

Sequences travel between layers as Python lists of per-step (N, ·) tensors, never as one stacked
tensor that each step slices: the gradient of a slice is a zero-padded full-size array, so slicing a
length-L sequence L times would make backward O(L²). The input is unbound once (its L slices are
narrow views) and the output stacked once at the end; `cat` and `stack` have cheap backwards.
"""

import math

from distgraph.nn import functional as F
from distgraph.nn import init
from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter
from distgraph.ops.creation import empty, zeros
from distgraph.ops.shape import cat, stack

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _rnn_cell(mode):
    act = F.relu if mode == "RNN_RELU" else F.tanh

    def cell(xw, h, w_hh, b_hh):
        return act(xw + F.linear(h, w_hh, b_hh))

    return cell


def _lstm_cell(xw, state, w_hh, b_hh):
    h, c = state
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, -1)
    c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
    return F.sigmoid(o) * F.tanh(c), c


def _gru_cell(xw, h, w_hh, b_hh):
    r_i, z_i, n_i = xw.chunk(3, -1)
    r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r, z = F.sigmoid(r_i + r_h), F.sigmoid(z_i + z_h)
    n = F.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


class RNNBase(Module):
    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, nonlinearity="tanh", device=None, dtype=None):  # fmt: skip
        super().__init__()
        if mode == "RNN":
            if nonlinearity not in ("tanh", "relu"):
                raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r} (tanh or relu)")
            mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        if not 0 <= dropout <= 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.nonlinearity = nonlinearity
        gate = _GATES[mode] * hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = input_size if layer == 0 else hidden_size * dirs
                setattr(self, "weight_ih" + sfx, Parameter(empty(gate, in_size, device=device, dtype=dtype)))
                setattr(self, "weight_hh" + sfx, Parameter(empty(gate, hidden_size, device=device, dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + sfx, Parameter(empty(gate, device=device, dtype=dtype)))
                    setattr(self, "bias_hh" + sfx, Parameter(empty(gate, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _weights(self, layer, d):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, n + sfx) if self.bias or n.startswith("weight") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _step(self):
        return {"LSTM": _lstm_cell, "GRU": _gru_cell}.get(self.mode) or _rnn_cell(self.mode)

    def forward(self, input, hx=None):
        unbatched = input.ndim == 2
        if input.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected 2-D or 3-D input, got {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # (L, N, In)
        batch = x.shape[1]
        dirs = 2 if self.bidirectional else 1
        lstm = self.mode == "LSTM"
        h0, c0 = self._initial(hx, batch, dirs, unbatched, x)
        cell = self._step()
        xs = x.unbind(0)  # L × (N, In)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                k = layer * dirs + d
                state = (h0[k], c0[k]) if lstm else h0[k]
                seq = [None] * len(xs)
                for t in reversed(range(len(xs))) if d else range(len(xs)):
                    state = cell(F.linear(xs[t], w_ih, b_ih), state, w_hh, b_hh)
                    seq[t] = state[0] if lstm else state
                outs.append(seq)
                h_n.append(state[0] if lstm else state)
                if lstm:
                    c_n.append(state[1])
            xs = outs[0] if dirs == 1 else [cat(pair, -1) for pair in zip(*outs)]
            if self.dropout and self.training and layer < self.num_layers - 1:
                xs = [F.dropout(h, self.dropout, True) for h in xs]
        x = stack(xs, 0)  # (L, N, dirs·H)
        out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        h_n = stack(h_n, 0)
        if unbatched:
            h_n = h_n.squeeze(1)
        if lstm:
            c_n = stack(c_n, 0)
            return out, (h_n, c_n.squeeze(1) if unbatched else c_n)
        return out, h_n

    def _initial(self, hx, batch, dirs, unbatched, x):
        shape = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            z = zeros(*shape, dtype=x.dtype, device=x.device)
            return z, z
        h, c = hx if self.mode == "LSTM" else (hx, None)
        if unbatched:
            h = h.unsqueeze(1)
            c = c.unsqueeze(1) if c is not None else None
        if tuple(h.shape) != shape:
            raise ValueError(f"{type(self).__name__}: expected hidden size {shape}, got {tuple(h.shape)}")
        return h, c

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if not self.bias:
            s += ", bias=False"
        return s


class RNN(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("RNN", *args, **kwargs)


class LSTM(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    def __init__(self, *args, **kwargs):
        super().__init__("GRU", *args, **kwargs)


class _CellBase(Module):
    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = self._gates * hidden_size
        self.weight_ih = Parameter(empty(g, input_size, device=device, dtype=dtype))
        self.weight_hh = Parameter(empty(g, hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(g, device=device, dtype=dtype))
            self.bias_hh = Parameter(empty(g, device=device, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _h0(self, input, hx):
        if hx is not None:
            return hx
        return zeros(*input.shape[:-1], self.hidden_size, dtype=input.dtype, device=input.device)


class RNNCell(_CellBase):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        mode = "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"
        return _rnn_cell(mode)(
            F.linear(input, self.weight_ih, self.bias_ih), self._h0(input, hx), self.weight_hh, self.bias_hh
        )


class LSTMCell(_CellBase):
    _gates = 4

    def forward(self, input, hx=None):
        if hx is None:
            h = self._h0(input, None)
            hx = (h, h)
        return _lstm_cell(F.linear(input, self.weight_ih, self.bias_ih), hx, self.weight_hh, self.bias_hh)


class GRUCell(_CellBase):
    _gates = 3

    def forward(self, input, hx=None):
        return _gru_cell(
            F.linear(input, self.weight_ih, self.bias_ih), self._h0(input, hx), self.weight_hh, self.bias_hh
        )
