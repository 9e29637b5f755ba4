import tracemalloc

import numpy as np

from distgraph.graph.executor import Runner
from distgraph.graph.ir import Graph
from distgraph.graph.passes.fusion import FusedKernel, fuse
from tests.graph.helpers import assert_same_outputs, captured, randn


def _chain(x, b):
    return ((x * 2.0 + b).tanh() * x - x.exp()).sum(1)


def test_elementwise_tree_becomes_one_node():
    graph, arrays = captured(_chain, randn(64, 32), randn(32))
    fused = fuse(graph)
    assert [n.op for n in fused.nodes] == ["fused", "sum"]
    steps = [s[0] for s in fused.nodes[0].attrs["program"]]
    assert steps == ["mul", "add", "tanh", "mul", "exp", "sub"]
    assert_same_outputs(graph, fused, arrays, tol=0.0)


def test_values_used_outside_a_group_or_returned_stay_unfused():
    def fn(x):
        y = x.exp()
        return y * 2.0, y.sum(0)

    graph, arrays = captured(fn, randn(5, 5))
    fused = fuse(graph)
    assert "fused" not in [n.op for n in fused.nodes]  # y escapes: exp and mul cannot share a kernel
    assert_same_outputs(graph, fused, arrays)


def test_fused_graph_survives_serialization():
    graph, arrays = captured(_chain, randn(8, 4), randn(4))
    back = Graph.from_dict(fuse(graph).to_dict())
    assert_same_outputs(graph, back, arrays, tol=0.0)


def test_cpu_kernel_allocates_only_its_output():
    graph, arrays = captured(lambda x: ((x * 2.0 + 1.0).tanh() * x).exp(), randn(256, 256))
    node = fuse(graph).nodes[0]
    consts = fuse(graph).constants
    kernel = FusedKernel(node, np)
    args = [arrays[0] if n == "%in0" else consts[n] for n in node.inputs]
    kernel(np, *args)  # first call allocates the per-thread buffers
    tracemalloc.start()
    out = kernel(np, *args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= out.nbytes + 4096  # four steps, one 512 KiB result, no temporaries
    np.testing.assert_array_equal(out, Runner(graph)(*arrays)[0])


def test_every_out_function_computes_its_ops_forward_bit_for_bit():
    """The ufunc standing for an op (written into a buffer with out=) is the op's own math: checked on
    values inside each op's domain, float32 and float64, against the registry forward."""
    from distgraph.graph.passes.fusion import UFUNCS, out_function
    from distgraph.ops.registry import get_op

    rng = np.random.default_rng(0)
    domain = {"acosh": (1.1, 3.0), "asin": (-0.9, 0.9), "acos": (-0.9, 0.9), "atanh": (-0.9, 0.9)}
    for op in UFUNCS:
        forward = get_op(op).forward
        for dtype in (np.float32, np.float64):
            lo, hi = domain.get(op, (0.1, 2.0) if op in ("log", "log2", "log10", "sqrt", "reciprocal") else (-2.0, 2.0))
            args = [
                rng.uniform(lo, hi, (5, 7)).astype(dtype)
                for _ in range(2 if op in ("add", "sub", "mul", "div", "maximum", "minimum") else 1)
            ]
            want = np.asarray(forward(np, *args))
            out = np.empty_like(want)
            got = out_function(np, op)(*args, out=out)
            assert got is out and np.array_equal(out, want, equal_nan=True), (op, dtype)


def test_the_new_unary_ops_run_fused_into_buffers():
    def fn(x):
        return ((x * 1.5).tanh().square() + x.abs().log1p()).sum(1)

    graph, arrays = captured(fn, randn(64, 32))
    fused = fuse(graph)
    (kernel_node,) = [n for n in fused.nodes if n.op == "fused"]
    kernel = FusedKernel(kernel_node, np)
    assert all(ufunc is not None for *_, ufunc in kernel.steps)  # no registry forward + copy left
    assert_same_outputs(graph, fused, arrays, tol=0.0)
