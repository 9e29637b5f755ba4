import tracemalloc

import numpy as np
import pytest

import distgraph as dg
from distgraph import errors
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


def _writer_cases():
    """(op, attrs) for every op that writes into a buffer: fusion's ufuncs and the registry's writers."""
    from distgraph.graph.passes.fusion import UFUNCS
    from distgraph.ops.registry import REGISTRY

    cases = [(op, {}) for op in UFUNCS]
    cases += [
        (name, {}) for name, op in REGISTRY.items() if op.writer_factory is not None and name not in ("clamp", "cast")
    ]
    cases += [("clamp", {"min": -0.5, "max": 0.75}), ("clamp", {"min": 0.1}), ("round", {"decimals": 2})]
    cases += [
        ("softplus", {"beta": 2.0, "threshold": 1.0}),
        ("leaky_relu", {"negative_slope": 0.2}),
        ("elu", {"alpha": 0.5}),
    ]
    cases += [("cast", {"dtype": "float16"}), ("cast", {"dtype": "float64"}), ("cast", {"dtype": "int32"})]
    return [c for c in cases if c[0] != "where"]


_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "atan2", "fmod", "remainder", "floor_divide",
           "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "bitwise_and",
           "bitwise_or", "bitwise_xor")  # fmt: skip
_DOMAIN = {"acosh": (1.1, 3.0), "asin": (-0.9, 0.9), "acos": (-0.9, 0.9), "atanh": (-0.9, 0.9), "pow": (0.1, 2.0)}
_DOMAIN |= {op: (0.1, 2.0) for op in ("log", "log2", "log10", "sqrt", "reciprocal", "rsqrt")}


@pytest.mark.parametrize("op,attrs", _writer_cases(), ids=lambda v: str(v) if v else "")
def test_every_out_function_computes_its_ops_forward_bit_for_bit(op, attrs):
    """The function writing an op into a buffer (a ufunc, or the op's registry writer) is the op's own
    math: checked against the registry forward on values inside the op's domain, float32 and float64
    (ints and bools for the bitwise ops), writing into a fresh buffer and in place over its first input."""
    from distgraph.graph.passes.fusion import out_function
    from distgraph.ops.registry import get_op

    rng = np.random.default_rng(0)
    forward = get_op(op).forward
    arity = 2 if op in _BINARY else 1
    dtypes = (np.int32, np.bool_) if op.startswith("bitwise") else (np.float32, np.float64)
    for dtype in dtypes:
        lo, hi = _DOMAIN.get(op, (-2.0, 2.0))
        args = [rng.uniform(lo, hi, (5, 7)) for _ in range(arity)]
        args = [
            (a * 50 > 0) if dtype == np.bool_ else (a * 50).astype(dtype) if dtype == np.int32 else a.astype(dtype)
            for a in args
        ]
        if args[0].dtype.kind == "f":  # the edges too: signed zeros, infinities, NaN
            args[0][0, :5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
        with np.errstate(all="ignore"):
            want = np.asarray(forward(np, *args, **attrs))
            out = np.empty_like(want)
            got = out_function(np, op)(*args, out=out, **attrs)
            assert got is out and _same_bits(out, want), (op, dtype)
            if want.dtype == args[0].dtype:  # the memory plan may give an elementwise op its dying input
                first = args[0].copy()
                out_function(np, op)(first, *args[1:], out=first, **attrs)
                assert _same_bits(first, want), (op, dtype, "in place")


def _same_bits(a, b):
    """Equal values with equal signs of zero, NaN where NaN."""
    return np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))


def test_where_writes_into_a_buffer_and_over_either_branch():
    from distgraph.graph.passes.fusion import out_function

    rng = np.random.default_rng(1)
    where = out_function(np, "where")
    for dtype in (np.float32, np.float64):
        cond = rng.uniform(size=(5, 7)) > 0.5
        a, b = rng.normal(size=(5, 7)).astype(dtype), rng.normal(size=(1, 7)).astype(dtype)
        want = np.where(cond, a, b)
        assert np.array_equal(where(cond, a, b, out=np.empty_like(want)), want)
        assert np.array_equal(where(cond, a.copy(), b), want)  # no out: the forward's own result
        over_a = a.copy()
        assert where(cond, over_a, b, out=over_a) is over_a and np.array_equal(over_a, want)
        full_b = np.broadcast_to(b, a.shape).copy()
        assert where(cond, a, full_b, out=full_b) is full_b and np.array_equal(full_b, want)


def test_the_new_unary_ops_run_fused_into_buffers():
    def fn(x):
        return ((x * 1.5).tanh().square() + x.abs().log1p()).sum(1)

    graph, arrays = captured(fn, randn(64, 32))
    fused = fuse(graph)
    (kernel_node,) = [n for n in fused.nodes if n.op == "fused"]
    kernel = FusedKernel(kernel_node, np)
    assert all(ufunc is not None for *_, ufunc in kernel.steps)  # no registry forward + copy left
    assert_same_outputs(graph, fused, arrays, tol=0.0)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("floor_divide", lambda a, b: a // b),
        ("floor_divide", lambda a, b: (a // b) * 2 + 1),  # fused with its neighbours
        ("remainder", lambda a, b: a % b),
        ("fmod", lambda a, b: dg.fmod(a, b) - a),
    ],
)
def test_compiled_integer_division_by_zero_raises_as_eager(name, fn):
    """fusion.UFUNCS ran these as bare numpy ufuncs, so a compiled graph (codegen and the interpreter
    alike) returned 0 for an integer zero divisor where eager raises DivisionByZeroError."""
    x = dg.tensor(np.array([7, -7, 5], np.int64))
    ones, zero = dg.tensor(np.array([2, 3, 1], np.int64)), dg.tensor(np.array([2, 0, 1], np.int64))
    compiled = dg.compile(fn, [x, ones])
    np.testing.assert_array_equal(compiled(x, ones).numpy(), fn(x, ones).numpy())
    with pytest.raises(errors.DivisionByZeroError, match=f"{name}: integer division by zero"):
        fn(x, zero)
    with pytest.raises(errors.DivisionByZeroError, match=f"{name}: integer division by zero"):
        compiled(x, zero)
    graph, _ = captured(fn, x, ones)
    for g in (graph, fuse(graph)):
        with pytest.raises(errors.DivisionByZeroError, match=name):
            Runner(g)(x.array, zero.array)
