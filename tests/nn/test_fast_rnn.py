"""The quick recurrent kernels (ops/recurrent_kernels.py) against torch: outputs, final states and the
gradients of every parameter, the input and the initial states, in float64 to 1e-12 and float32 to
rounding, for LSTM, GRU and RNN over layers, directions, batch_first and bias; the array rule of
`rnn_layer` (the engine's fast mode) against its differentiable rule (through the BPTT op); and the
blocked backward over lengths that are not a multiple of its block."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.ops import recurrent as R
from distgraph.ops import recurrent_kernels as K

torch = pytest.importorskip("torch")

CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=1, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, bias=False),
]


def _pair(name, kw, dtype, seed):
    torch.manual_seed(seed)
    tm = getattr(torch.nn, name)(5, 6, **kw).to(dtype)
    dm = getattr(dg.nn, name)(5, 6, **kw)
    dm = dm.double() if dtype == torch.float64 else dm.float()
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    return tm, dm


def _run(lib, module, x, hx, lstm):
    xt = (torch.tensor if lib is torch else dg.tensor)(x, requires_grad=True)
    states = [(torch.tensor if lib is torch else dg.tensor)(h, requires_grad=True) for h in hx]
    out, fin = module(xt, tuple(states) if lstm else states[0])
    fin = fin if lstm else (fin,)
    loss = (out * out).sum() + sum((f * f.cos()).sum() for f in fin)  # reaches c_n too
    loss.backward()
    grads = [xt.grad, *(s.grad for s in states), *(p.grad for p in module.parameters())]
    return [out, *fin], grads


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kw", CONFIGS, ids=str)
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_layers_match_torch(name, kw, dtype):
    np_dtype = np.dtype(dtype)
    tm, dm = _pair(name, kw, getattr(torch, dtype), 0)
    rng = np.random.default_rng(1)
    steps, batch = 11, 3  # 11 steps: several backward blocks when the block is small (see below)
    shape = (batch, steps, 5) if kw.get("batch_first") else (steps, batch, 5)
    x = rng.standard_normal(shape).astype(np_dtype)
    dirs = 2 if kw.get("bidirectional") else 1
    hx = [rng.standard_normal((kw["num_layers"] * dirs, batch, 6)).astype(np_dtype)]
    lstm = name == "LSTM"
    hx += [rng.standard_normal(hx[0].shape).astype(np_dtype)] if lstm else []
    got_v, got_g = _run(dg, dm, x, hx, lstm)
    want_v, want_g = _run(torch, tm, x, hx, lstm)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-5)
    for a, b in zip(got_v + got_g, want_v + want_g):
        assert a.dtype == dg.float64 if dtype == "float64" else a.dtype == dg.float32
        np.testing.assert_allclose(_np(a), _np(b), **tol)


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_blocked_backward_is_independent_of_the_block_size(mode, reverse, size, monkeypatch):
    rng = np.random.default_rng(2)
    hid, n, steps = 3, 2, 7
    gates = R.GATES[mode] * hid
    xw = rng.standard_normal((steps, n, gates))
    rest = [rng.standard_normal((n, hid))] if mode == "LSTM" else []
    rest += [rng.standard_normal((gates, hid)) * 0.5] + ([rng.standard_normal(gates)] if mode == "GRU" else [])
    h0 = rng.standard_normal((n, hid))
    y = K.forward(np, xw, h0, rest, mode, reverse)
    gy = rng.standard_normal(y.shape)
    whole = K.backward(np, gy, y, xw, h0, rest, mode, reverse)
    monkeypatch.setattr(K, "block_size", lambda n, width: size)
    for a, b in zip(K.backward(np, gy, y, xw, h0, rest, mode, reverse), whole):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    ins = [dg.tensor(a, requires_grad=True) for a in (xw, h0, *rest)]
    ref = R._composite(mode, reverse, *ins)
    np.testing.assert_allclose(y, _np(ref), rtol=1e-13, atol=1e-14)
    for a, b in zip(whole, dg.autograd.grad([ref], ins, [dg.tensor(gy)])):
        np.testing.assert_allclose(a, _np(b), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_array_rule_equals_the_bptt_op(mode):
    """create_graph=False takes rnn_layer's array rule, create_graph=True its Tensor rule (the vjp op)."""
    rng = np.random.default_rng(3)
    gates = R.GATES[mode] * 4
    shapes = [(6, 3, gates), (3, 4)] + ([(3, 4)] if mode == "LSTM" else []) + [(gates, 4)]
    shapes += [(gates,)] if mode == "GRU" else []
    arrays = [rng.standard_normal(s) * 0.5 for s in shapes]
    seed = dg.tensor(rng.standard_normal((6, 3, 8 if mode == "LSTM" else 4)))
    got = []
    for create_graph in (False, True):
        ins = [dg.tensor(a, requires_grad=True) for a in arrays]
        y = R.rnn_layer(mode, *ins, reverse=True)
        got.append([_np(g) for g in dg.autograd.grad([y], ins, [seed], create_graph=create_graph)])
    for a, b in zip(*got):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_long_float32_lstm_matches_torch():
    """35 steps of a batch of 32 (the profiled run's sequence) in float32: torch's values to rounding."""
    tm, dm = _pair("LSTM", {}, torch.float32, 0)
    x = np.random.default_rng(4).standard_normal((35, 32, 5)).astype(np.float32)
    got_v, got_g = _run(dg, dm, x, [np.zeros((1, 32, 6), np.float32)] * 2, True)
    want_v, want_g = _run(torch, tm, x, [np.zeros((1, 32, 6), np.float32)] * 2, True)
    for a, b in zip(got_v + got_g, want_v + want_g):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-4, atol=1e-5)
