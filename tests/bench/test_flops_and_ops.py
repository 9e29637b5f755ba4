"""The figures benchmarks divide by: `bench mlp`/`bench graph`'s FLOP count and matmul-only baseline (the
step's own products, no more), and `bench ops`'s forward ops per chain (the recorded autograd nodes)."""

import numpy as np
import pytest

from distgraph.bench.mlp import MODELS, _flops, _matmul_only

SIZES, BATCH = (8, 16, 16, 4), 5


def test_flop_count_is_the_matmul_work_the_captured_step_records():
    """The first layer's input gradient is not computed (its input is the data): the captured train step's
    linear, weight-gradient and input-gradient nodes add up to `_flops`, as the real step's do."""
    from distgraph.bench.graph import _captured_step

    _, _, compiled, _, _ = _captured_step(SIZES, BATCH, np.random.default_rng(0))
    nodes = compiled.graph.nodes
    assert {n.op for n in nodes if n.op in ("linear", "linear_weight_grad", "matmul")} == {
        "linear", "linear_weight_grad", "matmul",
    }  # fmt: skip
    recorded = sum(n.flops for n in nodes if n.op in ("linear", "linear_weight_grad", "matmul"))
    assert _flops(SIZES, BATCH) == recorded == 2 * BATCH * (2 * 8 * 16 + 3 * 16 * 16 + 3 * 16 * 4)
    (a, b, c, d), batch = MODELS["compute-bound"]
    assert _flops((a, b, c, d), batch) == 2 * batch * (2 * a * b + 3 * b * c + 3 * c * d)


class _Counted(np.ndarray):
    """An array whose matmuls add their 2·M·N·K to `done`."""

    done = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        arrays = [np.asarray(x) for x in inputs]
        if ufunc is np.matmul:
            (m, k), (_, n) = arrays[0].shape, arrays[1].shape
            _Counted.done.append(2 * m * n * k)
        return getattr(ufunc, method)(*arrays, **kwargs)


def test_the_matmul_only_baseline_runs_exactly_the_counted_products(monkeypatch):
    import types

    import distgraph as dg

    xp = types.SimpleNamespace(asarray=lambda a: np.asarray(a).view(_Counted))
    monkeypatch.setattr(dg, "device", lambda dev: types.SimpleNamespace(xp=xp))
    run = _matmul_only(SIZES, BATCH, np.random.default_rng(0))
    _Counted.done.clear()
    run()
    assert len(_Counted.done) == 3 * 3 - 1 and sum(_Counted.done) == _flops(SIZES, BATCH)


def test_ops_counts_each_chains_forward_ops_from_the_recorded_graph():
    """sub-exp-div is sub, exp, add, div, tanh; sigmoid-mul-sum is sigmoid, mul, sum, expand; plus the final
    sum — counted as the autograd nodes of the chain, the same in distgraph and torch."""
    import distgraph as dg
    from distgraph.bench.ops import CHAINS, recorded_ops

    per_link = {"mul-add-tanh": 3, "matmul-relu": 2, "sub-exp-div": 5, "sigmoid-mul-sum": 4}
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 4), dtype=np.float32), rng.random((4, 4), dtype=np.float32)
    ours = (dg.tensor(a, requires_grad=True), dg.tensor(b, requires_grad=True))
    assert {name: recorded_ops(ours, body, 7) for name, body in CHAINS.items()} == {
        name: 7 * n + 1 for name, n in per_link.items()
    }
    torch = pytest.importorskip("torch")
    theirs = (torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True))
    assert {name: recorded_ops(theirs, body, 7) for name, body in CHAINS.items()} == {
        name: 7 * n + 1 for name, n in per_link.items()
    }
