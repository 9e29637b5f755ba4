"""The recurrent layer keeps its gates for the backward where eager autograd records it (`rnn_layer_saving`,
ops/recurrent.py) and keeps nothing elsewhere (no_grad, inputs that need no grad, capture); the backward
from the kept gates gives the bits of the one that recomputes them, for LSTM and GRU modules in float32 and
float64, over layers, directions and batch_first, with initial states that need gradients too."""

from types import SimpleNamespace

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.autograd.function import set_tracer
from distgraph.ops import recurrent as R

CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, bidirectional=True),
]
STEPS, BATCH, FEATURES, HIDDEN = 7, 4, 8, 16


def _batched_products_exact(dtype, gates):
    """Whether this BLAS gives the recompute's one (L·N, H)·(H, G) product the bits of the forward's per-step
    (N, H)·(H, G) ones at the test's sizes: the old backward's gates were the forward's only then."""
    rng = np.random.default_rng(1)
    h = rng.standard_normal((STEPS * BATCH, HIDDEN)).astype(dtype)
    wt = rng.standard_normal((HIDDEN, gates)).astype(dtype)
    steps = [h[t * BATCH : (t + 1) * BATCH] @ wt for t in range(STEPS)]
    return np.array_equal(h @ wt, np.concatenate(steps))


def _run(module, x, hx):
    """Outputs, final states and the gradients of the input, the initial states and every parameter."""
    module.zero_grad()
    xt = dg.tensor(x, requires_grad=True)
    states = [dg.tensor(h, requires_grad=True) for h in hx]
    out, fin = module(xt, tuple(states) if len(states) == 2 else states[0])
    fin = fin if len(states) == 2 else (fin,)
    loss = (out * out).sum() + sum((f * f.cos()).sum() for f in fin)
    loss.backward()
    values = [out.detach().numpy().copy()] + [f.detach().numpy().copy() for f in fin]
    grads = [xt.grad.numpy().copy()] + [s.grad.numpy().copy() for s in states]
    return values, grads + [p.grad.numpy().copy() for p in module.parameters()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_backward_from_kept_gates_equals_recomputing_them(name, dtype, config, monkeypatch):
    module = getattr(nn, name)(FEATURES, HIDDEN, **config)
    module = module.double() if dtype == np.float64 else module.float()
    rng = np.random.default_rng(0)
    shape = (BATCH, STEPS, FEATURES) if config.get("batch_first") else (STEPS, BATCH, FEATURES)
    x = rng.standard_normal(shape).astype(dtype)
    state = (config["num_layers"] * (2 if config.get("bidirectional") else 1), BATCH, HIDDEN)
    hx = [rng.standard_normal(state).astype(dtype) for _ in range(2 if name == "LSTM" else 1)]
    kept = _run(module, x, hx)
    monkeypatch.setattr(R, "_rnn_layer_saving", R._rnn_layer)  # record the op that keeps nothing
    recomputed = _run(module, x, hx)
    for a, b in zip(kept[0], recomputed[0]):
        assert np.array_equal(a, b)
    exact = _batched_products_exact(dtype, R.GATES[name] * HIDDEN)
    for a, b in zip(kept[1], recomputed[1]):
        if exact:
            assert np.array_equal(a, b)
        else:  # the kept gates are the forward's; the recomputed ones differ from them in the last bit
            np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-11, atol=1e-6)


def _layer_inputs(mode, requires_grad=True):
    rng = np.random.default_rng(2)
    gates = R.GATES[mode] * 3
    shapes = [(5, 2, gates), (2, 3)] + ([(2, 3)] if mode == "LSTM" else []) + [(gates, 3)]
    shapes += [(gates,)] if mode == "GRU" else []
    return [dg.tensor(rng.standard_normal(s), requires_grad=requires_grad) for s in shapes]


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_a_recorded_layer_keeps_four_gates_a_step(mode):
    ins = _layer_inputs(mode)
    node = R.rnn_layer(mode, *ins).grad_fn
    assert node.op is R._rnn_layer_saving
    kept = node.saved if mode == "LSTM" else np.concatenate(node.saved, -1)
    assert kept.shape == (5, 2, 4 * 3)


def test_the_rnn_modes_keep_nothing_but_the_output():
    node = R.rnn_layer("RNN_TANH", *_layer_inputs("RNN_TANH")).grad_fn
    assert node.op is R._rnn_layer_saving and node.saved is None


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_an_unrecorded_layer_keeps_nothing(mode, monkeypatch):
    calls = []
    forward = R._rnn_layer_saving.forward
    monkeypatch.setattr(R._rnn_layer_saving, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    with dg.no_grad():
        assert R.rnn_layer(mode, *_layer_inputs(mode)).grad_fn is None
    assert R.rnn_layer(mode, *_layer_inputs(mode, requires_grad=False)).grad_fn is None
    assert not calls


def test_capture_records_the_layer_that_keeps_nothing():
    """A saves_extra op's captured gradient would be an opaque vjp node per input, each rerunning the layer."""
    recorded = []
    prev = set_tracer(SimpleNamespace(record=lambda op, inputs, attrs, out: recorded.append(op.name)))
    try:
        y = R.rnn_layer("LSTM", *_layer_inputs("LSTM"))
    finally:
        set_tracer(prev)
    assert recorded == ["rnn_layer"] and y.grad_fn.op is R._rnn_layer
