"""The fused recurrent layer op: equal to the per-step composite in value, gradient and second
derivative (every mode, both directions), gradcheck, a clear error at third order, and a captured
(compiled) training step that matches eager."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import AutogradError
from distgraph.ops import recurrent as R

rng = np.random.default_rng(0)
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


def inputs(mode, steps=5, batch=3, hidden=4):
    gates = R.GATES[mode] * hidden
    shapes = [(steps, batch, gates), (batch, hidden)]
    shapes += [(batch, hidden)] if mode == "LSTM" else []
    shapes += [(gates, hidden)] + ([(gates,)] if mode == "GRU" else [])
    return [dg.tensor(rng.standard_normal(s) * (0.5 if len(s) == 2 and s[0] == gates else 1), requires_grad=True)
            for s in shapes]  # fmt: skip


def penalty(layer, mode, reverse, ins):
    """|d<y, y>/d inputs|², built with create_graph: its gradient is a second derivative of the layer."""
    y = layer(mode, reverse, *ins)
    grads = dg.autograd.grad([(y * y).sum()], ins, create_graph=True)
    return sum(((g * g).sum() for g in grads), dg.tensor(0.0))


def fused(mode, reverse, *ins):
    return R.rnn_layer(mode, *ins, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_fused_layer_equals_the_per_step_composite(mode, reverse):
    ins = inputs(mode)
    y, y_ref = fused(mode, reverse, *ins), R._composite(mode, reverse, *ins)
    np.testing.assert_allclose(y.detach().numpy(), y_ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    seed = dg.tensor(rng.standard_normal(tuple(y.shape)))
    for a, b in zip(dg.autograd.grad([y], ins, [seed]), dg.autograd.grad([y_ref], ins, [seed])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)
    second = dg.autograd.grad([penalty(fused, mode, reverse, ins)], ins)
    second_ref = dg.autograd.grad([penalty(R._composite, mode, reverse, ins)], ins)
    for a, b in zip(second, second_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_fused_layer_gradcheck(mode):
    ins = inputs(mode, steps=3, batch=2, hidden=2)
    assert dg.autograd.gradcheck(lambda *a: R.rnn_layer(mode, *a, reverse=True), ins)


def test_third_order_raises():
    ins = inputs("GRU", steps=2, batch=1, hidden=2)
    y = fused("GRU", False, *ins)
    (g,) = dg.autograd.grad([(y * y).sum()], [ins[0]], create_graph=True)
    with pytest.raises(AutogradError, match="third-order"):
        dg.autograd.grad([(g * g).sum()], [ins[0]], create_graph=True)


def test_compiled_lstm_training_step_matches_eager():  # capture records the vjp op
    class Last(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True), nn.Linear(8, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    model = Last().double()
    x, y = dg.tensor(rng.standard_normal((5, 6, 3))), dg.tensor(rng.integers(0, 2, 5))
    dg.nn.functional.cross_entropy(model(x), y).backward()
    eager = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn
        step = dg.compile(model, (x, y), loss_fn=dg.nn.functional.cross_entropy)
        step(x, y)
    for a, b in zip(eager, (p.grad.numpy() for p in model.parameters())):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
