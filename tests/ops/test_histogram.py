"""ops/histogram.py against torch: histogram and histogramdd hist and bin_edges (to linspace's last bit), for bin counts and
edge tensors, range, weight and density, float64 and float32; no gradient; bad input raises torch's error."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, InputRangeError, ShapeError

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
X = RNG.standard_normal(40) * 3  # no value within an ulp of an edge: linspace's last bits differ from torch's
Y = RNG.standard_normal((5, 6, 3))


def _same(d, t):
    assert d.dtype.name == str(t.dtype).removeprefix("torch.")
    np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-12 if d.dtype == dg.float64 else 1e-6, atol=1e-15)


def _case(args, kwargs, m):
    wrap = dg.tensor if m is dg else torch.tensor
    conv = {k: wrap(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    return [wrap(a) if isinstance(a, np.ndarray) else a for a in args], conv


HIST = [
    ((X, 7), {}),
    ((X,), {}),
    ((X, 4), {"range": (-1.0, 2.0)}),
    ((X, 5), {"weight": RNG.random(40), "density": True}),
    ((X, np.array([-5.0, -1.0, 0.0, 0.5, 4.0])), {}),
    ((X, np.array([-5.0, -1.0, 0.0, 0.5, 4.0])), {"density": True, "weight": RNG.random(40)}),
    ((X.reshape(5, 8), 3), {"weight": RNG.random((5, 8))}),
    ((np.ones(3), 3), {}),
    ((np.zeros(0), 3), {}),
    ((X.astype(np.float32), 6), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), HIST, ids=[str(i) for i in range(len(HIST))])
def test_histogram_matches_torch(args, kwargs):
    a, k = _case(args, kwargs, dg)
    b, kt = _case(args, kwargs, torch)
    got, want = dg.histogram(*a, **k), torch.histogram(*b, **kt)
    _same(got.hist, want.hist)
    _same(got.bin_edges, want.bin_edges)
    method = a[0].histogram(*a[1:], **k)
    _same(method.hist, want.hist)


DD = [
    ((Y, [2, 3, 4]), {}),
    ((Y, 3), {"density": True}),
    ((Y, 2), {"range": [-1.0, 1.0, 0.0, 2.0, -2.0, 0.0], "weight": RNG.random((5, 6))}),
    ((Y, [np.array([-2.0, 0.0, 2.0]), np.array([-1.0, 1.0]), np.array([-3.0, -0.5, 0.0, 3.0])]), {"density": True}),
]


@pytest.mark.parametrize(("args", "kwargs"), DD, ids=[str(i) for i in range(len(DD))])
def test_histogramdd_matches_torch(args, kwargs):
    def prep(m):
        a, k = _case(args, kwargs, m)
        if isinstance(a[1], list) and isinstance(a[1][0], np.ndarray):
            a[1] = [dg.tensor(e) if m is dg else torch.tensor(e) for e in a[1]]
        return a, k

    (a, k), (b, kt) = prep(dg), prep(torch)
    got, want = dg.histogramdd(*a, **k), torch.histogramdd(*b, **kt)
    _same(got.hist, want.hist)
    assert len(got.bin_edges) == len(want.bin_edges)
    for g, w in zip(got.bin_edges, want.bin_edges):
        _same(g, w)


def test_histogram_has_no_gradient():
    x = dg.tensor(X, requires_grad=True)
    hist, edges = dg.histogram(x, 4)
    assert not hist.requires_grad and not edges.requires_grad


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dg.histogram(dg.tensor([1, 2]), 3), NotImplementedError, "not implemented for 'int64'"),
        (lambda: dg.histogram(dg.tensor(X), 0), InputRangeError, "bins must be > 0, but got 0"),
        (lambda: dg.histogram(dg.tensor(X), 3, range=(4.0, 1.0)), InputRangeError, "min should not exceed max"),
        (lambda: dg.histogram(dg.tensor(X), 3, range=(0.0, float("inf"))), InputRangeError, "is not finite"),
        (lambda: dg.histogram(dg.tensor([1.0, float("nan")]), 3), InputRangeError, r"range \[nan, nan\] is not finite"),
        (lambda: dg.histogram(dg.tensor(X), 3, weight=dg.ones(3)), ShapeError, r"weight with shape \[3\]"),
        (lambda: dg.histogram(dg.tensor(X), dg.tensor([[1.0, 2.0]])), ShapeError, "bins tensor should have one"),
        (lambda: dg.histogram(dg.tensor(X), dg.tensor([1.0], dtype=dg.float32)), DTypeError, "same dtype"),
        (lambda: dg.histogram(dg.tensor(X), 3, weight=dg.ones(40)), DTypeError, "input tensor and weight tensor"),
        (lambda: dg.histogramdd(dg.tensor(Y), [2]), ShapeError, "size of bins must be equal"),
        (lambda: dg.histogramdd(dg.tensor(Y), 2, range=[0.0, 1.0]), ShapeError, "range should have 6 elements"),
        (lambda: dg.histogramdd(dg.tensor(X), 2), ShapeError, "at least 2 dimensions"),
    ],
)
def test_histogram_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
