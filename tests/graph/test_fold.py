import numpy as np

import distgraph as dg
from distgraph.graph.passes.dce import dce
from distgraph.graph.passes.fold import fold
from distgraph.graph.passes.simplify import simplify
from tests.graph.helpers import assert_same_outputs, captured, randn


def test_nodes_of_constants_become_constants():
    c = dg.tensor(np.arange(6.0).reshape(2, 3))
    graph, arrays = captured(lambda x: x + (c * 2.0).exp().sum(0), randn(4, 3))
    folded = dce(fold(graph))
    assert [n.op for n in folded.nodes] == ["add"]
    (const,) = folded.constants.values()
    np.testing.assert_allclose(const, np.exp(np.arange(6.0).reshape(2, 3) * 2).sum(0), rtol=0, atol=0)
    assert_same_outputs(graph, folded, arrays)


def test_large_broadcast_results_stay_nodes():
    graph, _ = captured(lambda x: x + dg.tensor(np.float64(1.0)).expand(512, 512), randn(512, 512))
    assert [n.op for n in fold(graph, max_bytes=1024).nodes] == ["expand", "add"]


def test_simplify_removes_identities_without_changing_values():
    def fn(x):
        y = (x * 1.0 + 0.0) / 1.0 - 0.0
        return (-(-y)).reshape(3, 4).to(dg.float64).permute(0, 1).exp()

    graph, arrays = captured(fn, randn(3, 4))
    simple = dce(simplify(graph))
    assert [n.op for n in simple.nodes] == ["exp"]
    assert_same_outputs(graph, simple, arrays, tol=0.0)


def test_simplify_keeps_ops_that_broadcast():
    graph, arrays = captured(lambda x: x * dg.tensor(np.ones((2, 3, 4))), randn(3, 4))
    assert [n.op for n in simplify(graph).nodes] == ["mul"]


def test_simplify_never_returns_an_input_where_eager_returns_a_new_tensor():
    """`x * 1`, `x + 0` and `-(-x)` returned: simplified to `x`, writing into the compiled result wrote into the
    caller's input; the identity is kept when it is returned (or viewed by a returned value)."""
    for fn in (lambda x: x * 1, lambda x: (x + 0).reshape(12), lambda x: -(-x)):
        x = dg.tensor(np.ones((4, 3)))
        with dg.no_grad():
            out = dg.compile(fn, (x,))(x)
        out.mul_(5)
        np.testing.assert_array_equal(x.array, np.ones((4, 3)))
    graph, arrays = captured(lambda x: (x * 1).exp(), randn(4, 3))
    assert [n.op for n in simplify(graph).nodes] == ["exp"]  # not returned: still removed


def test_a_folded_output_is_a_new_array_each_call():
    """An output folded into a constant (or a closure tensor returned) was the graph's own array: writing
    into one call's result changed what every later call returned."""
    c = dg.tensor(np.arange(3.0))
    x = dg.tensor(np.ones((4, 3)))
    for fn in (lambda x: (x + 1, dg.ones(3) * 2), lambda x: (x + 1, c * 2), lambda x: (x + 1, c)):
        with dg.no_grad():
            f = dg.compile(fn, (x,))
            f(x)[1].mul_(5)
            np.testing.assert_array_equal(f(x)[1].array, fn(x)[1].array)
