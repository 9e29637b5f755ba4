"""Reductions (ops/reduction.py) against torch float64: every reduction over all dims, one dim, tuple
dims with keepdim, negative dims, size-1 and size-0 dims; ties in max/min split the gradient as torch
does; gradcheck; double backward."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import POS, Table, run_double_backward, run_gradcheck, run_parity, torch

T = Table()
for name in ["sum", "mean", "amax", "amin", "logsumexp", "prod", "var", "std"]:
    all_dims = (0, 1) if name == "logsumexp" else None
    T.op(name + "-all", lambda m, a, n=name, d=all_dims: getattr(m, n)(a, d) if d else getattr(m, n)(a), (3, 4))
    T.op(
        name + "-dim", lambda m, a, n=name: getattr(m, n)(a, 1), (3, 4, 2), double=name in ("prod", "std", "logsumexp")
    )
    T.op(name + "-negdim-keep", lambda m, a, n=name: getattr(m, n)(a, -1, keepdim=True), (3, 4, 2))
    T.op(name + "-size1", lambda m, a, n=name: getattr(m, n)(a, 0), (1, 4), gradcheck=name not in ("var", "std"))
    if name != "prod":  # torch.prod takes one int dim only
        T.op(
            name + "-tuple-keep",
            lambda m, a, n=name: getattr(m, n)(a, (0, 2), keepdim=True),
            (3, 4, 2),
            double=name in ("var", "logsumexp"),
        )
    if name not in ("amax", "amin", "var", "std"):  # empty reductions: 0, nan, -inf, 1 as torch
        T.op(name + "-size0-reduced", lambda m, a, n=name: getattr(m, n)(a, 0), (0, 3))
    T.op(name + "-size0-kept", lambda m, a, n=name: getattr(m, n)(a, 1), (0, 3))
T.op("sum-method-keep", lambda m, a: a.sum(1, keepdim=True), (3, 4))
T.op("mean-method-tuple", lambda m, a: a.mean((-1, 0)), (3, 4))
T.op("var-correction0", lambda m, a: m.var(a, 0, correction=0), (4, 3))
T.op("var-unbiased-false", lambda m, a: a.var(1, unbiased=False), (4, 3))
T.op("std-correction2", lambda m, a: m.std(a, 1, correction=2), (4, 5))
T.op("var_mean", lambda m, a: m.var_mean(a, 1), (4, 3))
T.op("std_mean", lambda m, a: m.std_mean(a, (0, 1), keepdim=True), (4, 3, 2))
T.op("prod-with-zero", lambda m, a: m.prod(a * (a > 0.5), 1), (3, 4), gradcheck=False)
T.op("prod-one-zero", lambda m, a: m.prod(m.cat([a, a[:, :1] * 0], 1), 1), (3, 4))
T.op("max-dim", lambda m, a: m.max(a, 1)[0], (3, 5))
T.op("max-dim-indices", lambda m, a: m.max(a, 1)[1], (3, 5), grad=False)
T.op("min-dim-keep", lambda m, a: m.min(a, 0, keepdim=True), (3, 5))
T.op("max-all", lambda m, a: m.max(a), (3, 5))
T.op("min-all-method", lambda m, a: a.min(), (3, 5))
T.op("max-binary", lambda m, a, b: m.max(a, b), (3, 5), (5,))
T.op("amax-ties-split", lambda m, a: m.amax(m.cat([a, a.detach()], 1), 1), (3, 4), gradcheck=False)
T.op("max-all-ties-split", lambda m, a: m.max(m.stack([a, a.detach()])), (3, 4), gradcheck=False)
T.op("amin-ties-tuple", lambda m, a: m.amin(m.stack([a, a.detach()]), (0, 2)), (3, 4), gradcheck=False)
T.op("logsumexp-large", lambda m, a: m.logsumexp(a * 500, 1), (3, 4))
for p in ["fro", 2, 1, 3, 0.5, 0, float("inf"), float("-inf")]:
    T.op(f"norm-p{p}-all", lambda m, a, p=p: m.norm(a, p), (3, 4), double=p in ("fro", 3))
    T.op(f"norm-p{p}-dim", lambda m, a, p=p: m.norm(a, p, 1), (3, 4), gradcheck=p != 0)
    T.op(f"norm-p{p}-tuple-keep", lambda m, a, p=p: a.norm(p, dim=(0, 2), keepdim=True), (3, 4, 2))
T.op("norm-of-zeros-has-zero-grad", lambda m, a: m.norm(a - a.detach()), (3, 4), gradcheck=False)
T.op("norm-p3-of-zeros", lambda m, a: m.norm(a - a.detach(), 3, 1), (3, 4), gradcheck=False)
T.op("norm-size0", lambda m, a: m.norm(a, dim=0), (0, 3))
# zero gradient where torch masks an infinite slope: std of a constant row, a p < 1 norm at a zero element
T.op("std-constant-row", lambda m, a: m.std(m.cat([a[:1] * 0 + a[:1, :1], a[1:]]), 1), (3, 4), gradcheck=False)
T.op("std-0d-dim", lambda m, a: m.std(a, 0, correction=0) + m.std(a.reshape(1), keepdim=True, correction=0), ())
T.op("std-constant-double", lambda m, a: m.std(a - a.mean(), 0, correction=0) + m.std(a, (0, 1)), (2, 3), double=True)
for p in [0.5, -1, -1.5]:
    T.op(f"norm-p{p}-at-zero", lambda m, a, p=p: m.norm(a * (a > 0), p, 1), (3, 4), gradcheck=False)
T.op("cumsum", lambda m, a: m.cumsum(a, 1), (3, 4))
T.op("cumsum-negdim", lambda m, a: a.cumsum(-2), (3, 4))
T.op("cumsum-size0", lambda m, a: m.cumsum(a, 1), (0, 4))
T.op("cumprod", lambda m, a: m.cumprod(a, 1), (3, 4), domain=POS, double=True)
T.op("cumprod-signed", lambda m, a: m.cumprod(a, 0), (4, 3))
for name in ["argmax", "argmin"]:
    T.op(name + "-all", lambda m, a, n=name: getattr(m, n)(a), (3, 4), grad=False)
    T.op(name + "-dim-keep", lambda m, a, n=name: getattr(m, n)(a, 1, keepdim=True), (3, 4), grad=False)
    T.op(name + "-negdim", lambda m, a, n=name: getattr(a, n)(-1), (2, 3, 4), grad=False)
for name in ["any", "all"]:
    T.op(name + "-all", lambda m, a, n=name: getattr(m, n)(a > 0.3), (3, 4), grad=False)
    T.op(name + "-dim-keep", lambda m, a, n=name: getattr(m, n)(a > -0.5, 1, keepdim=True), (3, 4), grad=False)
    T.op(name + "-size0", lambda m, a, n=name: getattr(m, n)(a > 0, 0), (0, 4), grad=False)
T.op("count_nonzero", lambda m, a: m.count_nonzero(a > 0, 1), (3, 4), grad=False)
# a 0-d tensor takes dim 0 / -1 (it has no axis: numpy's axis=0 raised); an empty dim list means every dim
for name in ["sum", "mean", "amax", "logsumexp", "prod", "cumsum", "cumprod", "softmax", "log_softmax"]:
    T.op(name + "-0d-dim", lambda m, a, n=name: getattr(m, n)(a, -1) * getattr(m, n)(a, 0), ())
T.op("max-0d-dim", lambda m, a: m.max(a, 0, keepdim=True)[0] * m.min(a, -1)[0], ())
T.op("max-0d-dim-indices", lambda m, a: (m.max(a, 0)[1], m.argmax(a, 0), m.argmin(a, -1, keepdim=True)), (), grad=False)
T.op("var-0d-dim", lambda m, a: m.var(a * m.ones(1, dtype=m.float64), 0, correction=0) + m.var(a, -1, correction=0), ())
for name in ["sum", "mean", "var", "std", "norm"]:  # torch's var/std backward then divides by n - 1 = 0: values only
    T.op(
        name + "-empty-dim-list", lambda m, a, n=name: getattr(m, n)(a, dim=()), (3, 4), grad=name not in ("var", "std")
    )
T.op("count_nonzero-empty-dim-list", lambda m, a: m.count_nonzero(a > 0, ()), (3, 4), grad=False)
T.op("argmax-keepdim-all", lambda m, a: (m.argmax(a, keepdim=True), a.argmin(keepdim=True)), (2, 3, 4), grad=False)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


def test_reductions_return_torch_dtypes():
    i = dg.tensor([[1, 2], [3, 4]])
    b = dg.tensor([[True, False], [True, True]])
    assert i.sum().dtype == dg.int64 and b.sum().dtype == dg.int64
    assert i.argmax().dtype == dg.int64 and b.any().dtype == dg.bool_
    assert dg.ones(2, 3).mean().dtype == dg.float32
    assert i.prod(1).tolist() == [2, 12] and i.cumsum(0).tolist() == [[1, 2], [4, 6]]
    with pytest.raises(dg.errors.DTypeError, match="mean.*int64"):
        i.mean()  # torch: mean of an integer tensor is an error, not a silent cast


def test_max_dim_returns_values_and_indices_named_like_torch():
    x = dg.tensor(np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 7.5]]))
    out = x.max(1)
    assert out.values.tolist() == [5.0, 7.5] and out.indices.tolist() == [1, 2]
    values, indices = x.min(dim=0)
    assert values.tolist() == [1.0, 0.0, 2.0] and indices.tolist() == [0, 1, 0]


def test_integer_accumulations_are_int64_like_torch():
    u = dg.tensor(np.array([200, 100, 3], dtype=np.uint8))
    tu = torch.tensor([200, 100, 3], dtype=torch.uint8)
    for f in [lambda m, t: t.sum(), lambda m, t: t.prod(), lambda m, t: t.cumsum(0), lambda m, t: t.cumprod(0)]:
        got, want = f(dg, u), f(torch, tu)
        assert got.dtype == dg.int64 and want.dtype == torch.int64 and got.tolist() == want.tolist()
    i16 = dg.tensor(np.array([300, 300], dtype=np.int16))
    assert i16.cumsum(0).dtype == dg.int64 and i16.cumsum(0).tolist() == [300, 600]
    assert dg.tensor([True, True]).cumprod(0).dtype == dg.int64


@pytest.mark.parametrize("fn", ["var_mean", "std_mean"])
@pytest.mark.parametrize("dim", [None, 0, 1, (0, 2), -1])
def test_var_mean_of_infinite_values_gives_torchs_welford_mean_and_mean_gradient(fn, dim):
    # torch's one-pass mean is NaN unless a slice's only infinite value comes last (mean() gives ±inf)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    x[0, 1, 2], x[1, 3, 4], x[2, 0, 0], x[2, 3, 4], x[1, 2, 4] = np.inf, -np.inf, np.inf, np.inf, np.inf
    out = []
    for m in (dg, torch):
        a = m.tensor(x.copy(), requires_grad=True)
        mean = getattr(m, fn)(a, dim)[1]
        (g,) = m.autograd.grad(mean.sum(), a)
        out.append((mean.detach().numpy(), g.numpy()))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-12)  # NaN where NaN, ±inf where ±inf
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-12)


@pytest.mark.parametrize("name", ["std", "var", "std_mean", "var_mean"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_a_bool_in_dims_place_is_unbiased_over_every_element_as_torchs_overload(name, unbiased):
    if torch is None:
        pytest.skip("torch not installed")
    x = np.arange(12.0).reshape(3, 4) ** 1.5
    want = getattr(torch, name)(torch.tensor(x), unbiased)
    methods = [getattr(dg.tensor(x), name)(unbiased)] if name in ("std", "var") else []  # (no Tensor.std_mean)
    for got in [getattr(dg, name)(dg.tensor(x), unbiased), *methods]:
        got, w = (got, want) if name in ("std", "var") else (got[0], want[0])
        assert got.shape == () and np.allclose(got.numpy(), w.numpy(), rtol=1e-12)
