"""Shared graphs for the graph-layer tests: small float64 models captured once per test."""

import numpy as np

import distgraph as dg
from distgraph.graph.capture import capture
from distgraph.graph.executor import Runner


def randn(*shape):
    return dg.tensor(np.random.default_rng(sum(shape)).standard_normal(shape))


def captured(fn, *inputs, grad_of=None):
    graph, params, _ = capture(fn, list(inputs), grad_of=grad_of)
    return graph, [t.array for t in inputs] + [p.array for p in params]


def assert_same_outputs(graph_a, graph_b, arrays, tol=1e-12):
    """Both graphs run on the same inputs give outputs within `tol` (float64)."""
    a, b = Runner(graph_a)(*arrays), Runner(graph_b)(*arrays)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0.0)) <= tol


def assert_step_matches_eager(step, model, loss_fn, inputs, target, tol=1e-12):
    """One call of the compiled training step `step` on (*inputs, target) gives eager's loss and writes
    eager's gradients into every parameter (named in the message when one differs)."""
    model.zero_grad()
    loss = step(*inputs, target)
    got = [p.grad.array.copy() for p in model.parameters()]
    model.zero_grad()
    ref = loss_fn(model(*inputs), target)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= tol
    for (name, p), g in zip(model.named_parameters(), got):
        assert np.max(np.abs(g - p.grad.array)) <= tol, name
