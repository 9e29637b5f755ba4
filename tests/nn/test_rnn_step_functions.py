"""torch's top-level RNN steps rnn_tanh_cell, rnn_relu_cell, lstm_cell, gru_cell (input, hx, w_ih, w_hh, b_ih,
b_hh): against torch in float64 (forward and gradient of every argument), finite differences, torch's errors,
and the same numbers as nn's cell modules."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(7)
N, I, H = 3, 4, 5
GATES = {"rnn_tanh_cell": 1, "rnn_relu_cell": 1, "lstm_cell": 4, "gru_cell": 3}


def _arrays(name, bias=True):
    g = GATES[name]
    arrays = [rng.standard_normal((N, I)), rng.standard_normal((N, H)), rng.standard_normal((g * H, I)) * 0.5,
              rng.standard_normal((g * H, H)) * 0.5]  # fmt: skip
    if name == "lstm_cell":
        arrays.insert(2, rng.standard_normal((N, H)))
    if bias:
        arrays += [rng.standard_normal(g * H), rng.standard_normal(g * H)]
    return arrays


def _call(lib, name, args):
    if name == "lstm_cell":  # hx is the pair (h, c)
        args = (args[0], (args[1], args[2]), *args[3:])
    return getattr(lib, name)(*args)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(GATES))
def test_rnn_step_matches_torch_and_finite_differences(name, bias):
    arrays = _arrays(name, bias)
    check(lambda *a: _call(dg, name, a), lambda *a: _call(torch, name, a), *arrays)
    tensors = tuple(dg.tensor(a, requires_grad=True) for a in arrays)
    assert dg.autograd.gradcheck(lambda *a: _call(dg, name, a), tensors)


@pytest.mark.parametrize(
    "name,module", [("rnn_tanh_cell", nn.RNNCell), ("lstm_cell", nn.LSTMCell), ("gru_cell", nn.GRUCell)]
)
def test_rnn_step_is_the_cell_modules_step(name, module):
    cell = module(I, H).double()
    x, h = dg.tensor(rng.standard_normal((N, I))), dg.tensor(rng.standard_normal((N, H)))
    hx = (h, h * 0.5) if name == "lstm_cell" else h
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    ours, theirs = getattr(dg, name)(x, hx, *weights), cell(x, hx)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_rnn_step_errors_are_torchs():
    x, h = dg.ones(2, 4), dg.zeros(2, 3)
    with pytest.raises(ShapeError, match="input has inconsistent input_size: got 4 expected 5"):
        dg.rnn_tanh_cell(x, h, dg.ones(3, 5), dg.ones(3, 3))
    with pytest.raises(ShapeError, match="Input batch size 2 doesn't match hidden0 batch size 3"):
        dg.gru_cell(x, dg.zeros(3, 3), dg.ones(9, 4), dg.ones(9, 3))
    with pytest.raises(ShapeError, match="hidden0 has inconsistent hidden_size: got 4, expected 3"):
        dg.gru_cell(x, dg.zeros(2, 4), dg.ones(9, 4), dg.ones(9, 3))
    with pytest.raises(ShapeError, match="lstm_cell expects two hidden states"):
        dg.lstm_cell(x, (h,), dg.ones(12, 4), dg.ones(12, 3))
    with pytest.raises(ShapeError, match="hidden1 has inconsistent hidden_size: got 4, expected 3"):
        dg.lstm_cell(x, (h, dg.zeros(2, 4)), dg.ones(12, 4), dg.ones(12, 3))
    with pytest.raises(ShapeError, match="weight_hh first dim must be 4 \\* hidden_size = 12, but got 11"):
        dg.lstm_cell(x, (h, h), dg.ones(12, 4), dg.ones(11, 3))


@pytest.mark.parametrize("name", ["rnn_tanh_cell", "rnn_relu_cell", "gru_cell", "lstm_cell"])
def test_rnn_step_functions_refuse_an_unbatched_input_as_torchs(name):
    """torch's ATen step functions index dim 1 of the input and state: a 1-d one is refused (nn's cells,
    not these, take unbatched input)."""
    gates = {"rnn_tanh_cell": 1, "rnn_relu_cell": 1, "gru_cell": 3, "lstm_cell": 4}[name]
    w_ih, w_hh = dg.ones(3 * gates, 4), dg.ones(3 * gates, 3)
    x, h = dg.ones(4), dg.zeros(3)
    hx = (h, h) if name == "lstm_cell" else h
    t_hx = tuple(torch.tensor(v.numpy()) for v in hx) if name == "lstm_cell" else torch.tensor(h.numpy())
    with pytest.raises(IndexError, match="Dimension out of range"):
        getattr(torch, name)(torch.tensor(x.numpy()), t_hx, *(torch.tensor(w.numpy()) for w in (w_ih, w_hh)))
    with pytest.raises(ShapeError, match="Dimension out of range"):
        getattr(dg, name)(x, hx, w_ih, w_hh)
    with pytest.raises(ShapeError, match="Input batch size 2 doesn't match hidden0 batch size 3"):  # torch's too
        getattr(dg, name)(dg.ones(2, 4), hx, w_ih, w_hh)
