"""ops/reduction_extra.py and ops/counting.py against torch float64: nansum nanmean median nanmedian
quantile nanquantile mode aminmax cummax cummin logcumsumexp msort unique unique_consecutive histc cov
corrcoef: values, indices, gradients (to the chosen elements), gradcheck, double backward, dtypes and
errors."""

import numpy as np
import pytest

import distgraph as dg
from tests.ops._table import Table, run_double_backward, run_gradcheck, run_parity, torch


def with_nans(m, a):
    """`a` with NaNs at fixed places: one in a row, a whole column of the last slice, another row."""
    mask = np.zeros(a.shape, dtype=bool)
    mask[0, 1, 2] = mask[-1, :, 1] = mask[1, -1, 0] = True
    return m.where(m.tensor(mask), m.tensor(float("nan"), dtype=m.float64), a)


T = Table()
T.op("nansum-all", lambda m, a: m.nansum(with_nans(m, a)), (3, 5, 4))
T.op("nansum-dim", lambda m, a: with_nans(m, a).nansum(1), (3, 5, 4))
T.op("nansum-tuple-keep", lambda m, a: m.nansum(with_nans(m, a), (0, 2), keepdim=True), (3, 5, 4))
T.op("nanmean-all", lambda m, a: m.nanmean(with_nans(m, a)), (3, 5, 4))
T.op("nanmean-dim", lambda m, a: with_nans(m, a).nanmean(-1, keepdim=True), (3, 5, 4))
T.op("median-all", lambda m, a: m.median(a), (3, 5, 4))
T.op("median-all-even", lambda m, a: a.median(), (4, 6))
T.op("median-all-nan", lambda m, a: m.median(with_nans(m, a)), (3, 5, 4), gradcheck=False)
T.op("median-all-ties", lambda m, a: m.median(m.cat([a, a.detach()])), (3, 4), gradcheck=False)
T.op("median-dim", lambda m, a: tuple(m.median(a, 1)), (3, 5, 4))
T.op("median-dim-keep-nan", lambda m, a: tuple(m.median(with_nans(m, a), 2, keepdim=True)), (3, 5, 4), gradcheck=False)
T.op("median-0d", lambda m, a: tuple(m.median(a, 0)), ())
T.op("nanmedian-all", lambda m, a: m.nanmedian(with_nans(m, a)), (3, 5, 4))
T.op("nanmedian-dim", lambda m, a: tuple(with_nans(m, a).nanmedian(1)), (3, 5, 4), gradcheck=False)
T.op("nanmedian-dim-even", lambda m, a: tuple(m.nanmedian(with_nans(m, a), 2)), (3, 5, 4))
for how in ["linear", "lower", "higher", "midpoint", "nearest"]:
    T.op(f"quantile-{how}", lambda m, a, h=how: m.quantile(a, 0.3, dim=1, interpolation=h), (3, 5, 4))
    T.op(
        f"quantile-tensor-q-{how}",
        lambda m, a, h=how: a.quantile(m.tensor([0.0, 0.25, 0.5, 1.0], dtype=m.float64), -1, True, interpolation=h),
        (3, 5, 4),
        gradcheck=False,  # NaN where a slice is all NaN
    )
    T.op(f"quantile-all-keep-{how}", lambda m, a, h=how: m.quantile(a, 0.77, keepdim=True, interpolation=h), (3, 5))
    T.op(
        f"nanquantile-{how}",
        lambda m, a, h=how: m.nanquantile(
            with_nans(m, a), m.tensor([0.1, 0.5, 0.9], dtype=m.float64), 1, interpolation=h
        ),
        (3, 5, 4),
        gradcheck=False,  # NaN where a slice is all NaN
    )
# q's gradient (torch's linear weights are q·(n - 1) - below): 0 where torch fixes the rank (a NaN row)
T.op("quantile-grad-of-q", lambda m, a, q: m.quantile(a, q.sigmoid(), 1), (3, 5, 4), (3,))
T.op("quantile-grad-of-0d-q", lambda m, a, q: m.quantile(a, q.sigmoid(), keepdim=True), (3, 5), ())
T.op(
    "quantile-grad-of-q-nan-rows",
    lambda m, a, q: m.quantile(with_nans(m, a), q.sigmoid(), 2),
    (3, 5, 4),
    (2,),
    gradcheck=False,
)
T.op(
    "nanquantile-grad-of-q",
    lambda m, a, q: m.nanquantile(with_nans(m, a), q.sigmoid(), 1),
    (3, 5, 4),
    (4,),
    gradcheck=False,
)
T.op("quantile-nan-row", lambda m, a: m.quantile(with_nans(m, a), 0.4, dim=2), (3, 5, 4), gradcheck=False)
T.op("quantile-0d-q", lambda m, a: m.quantile(a, m.tensor(0.6, dtype=m.float64)), (7,))
T.op("nanquantile-all", lambda m, a: m.nanquantile(with_nans(m, a), 0.77), (3, 5, 4))
T.op("mode", lambda m, a: tuple(m.mode((a * 2).round(), 1)), (3, 6, 4), gradcheck=False)
T.op("mode-keep-default-dim", lambda m, a: tuple((a * 2).round().mode(keepdim=True)), (3, 8), gradcheck=False)
T.op("aminmax-dim", lambda m, a: tuple(m.aminmax(a, dim=1)), (3, 5, 4))
T.op("aminmax-all", lambda m, a: tuple(a.aminmax()), (3, 5))
T.op("aminmax-ties-keep", lambda m, a: tuple(m.aminmax(a.round(), dim=0, keepdim=True)), (6, 4), gradcheck=False)
T.op("cummax", lambda m, a: tuple(m.cummax(a, 1)), (3, 5, 4))
T.op("cummax-nan-ties", lambda m, a: tuple(m.cummax(with_nans(m, a.round()), 2)), (3, 5, 4), gradcheck=False)
T.op("cummin", lambda m, a: tuple(a.cummin(-1)), (3, 5, 4))
T.op("cummin-nan-ties", lambda m, a: tuple(m.cummin(with_nans(m, a.round()), 1)), (3, 5, 4), gradcheck=False)
T.op("cummax-0d", lambda m, a: tuple(m.cummax(a, 0)), ())
T.op("cummin-size0", lambda m, a: tuple(m.cummin(a, 1)), (0, 3))
T.op("logcumsumexp", lambda m, a: m.logcumsumexp(a, 1), (3, 5, 4), double=True)
T.op("logcumsumexp-spread", lambda m, a: a.logcumsumexp(-1) * 1 + m.logcumsumexp(a * 800, 0), (3, 5))
T.op("logcumsumexp-0d", lambda m, a: m.logcumsumexp(a, 0), ())
T.op("msort", lambda m, a: m.msort(a), (5, 3))
T.op("msort-method", lambda m, a: a.msort(), (6,))
T.op("cov", lambda m, a: m.cov(a), (3, 6), double=True)
T.op("cov-1d-method", lambda m, a: a.cov(correction=0), (6,))
T.op(
    "cov-weights",
    lambda m, a, w: m.cov(a, fweights=m.tensor([1, 2, 3, 1, 1, 2]), aweights=w.abs() + 0.1),
    (3, 6),
    (6,),
    double=True,
)
T.op("cov-aweights-correction0", lambda m, a, w: m.cov(a, correction=0, aweights=w.abs() + 0.1), (2, 6), (6,))
T.op("cov-fweights-correction2", lambda m, a: m.cov(a, correction=2, fweights=m.tensor([1, 0, 2, 4, 1])), (2, 5))
T.op("corrcoef", lambda m, a: m.corrcoef(a), (3, 6), double=True)
T.op("corrcoef-1d", lambda m, a: a.corrcoef(), (6,))
T.op(
    "unique",
    lambda m, a: m.unique(with_nans(m, a.round()), return_inverse=True, return_counts=True),
    (3, 5, 4),
    grad=False,
)
T.op("unique-plain", lambda m, a: (a * 3).long().unique(), (4, 5), grad=False)
T.op("unique-counts", lambda m, a: m.unique((a * 3).long(), return_counts=True), (4, 5), grad=False)
T.op("unique-dim", lambda m, a: m.unique(a > 0, dim=1, return_inverse=True, return_counts=True), (2, 9, 2), grad=False)
T.op("unique-dim0", lambda m, a: m.unique((a > 0).long(), dim=0, return_inverse=True), (9, 2), grad=False)
T.op(
    "unique_consecutive",
    lambda m, a: m.unique_consecutive(a.round(), return_inverse=True, return_counts=True),
    (3, 5, 4),
    grad=False,
)
T.op(
    "unique_consecutive-dim",
    lambda m, a: (a > 0).long().unique_consecutive(dim=2, return_counts=True),
    (2, 2, 9),
    grad=False,
)
T.op("histc", lambda m, a: m.histc(a, bins=7), (50,), grad=False)
T.op("histc-range-float32", lambda m, a: a.float().histc(bins=5, min=-1, max=1), (8, 9), grad=False)
T.op("histc-constant", lambda m, a: m.histc(a * 0 + 2, bins=4), (5,), grad=False)
T.op("count_nonzero-tuple", lambda m, a: (a > 0).count_nonzero((0, 2)), (3, 4, 2), grad=False)


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("row", T.double_rows())
def test_double_backward_matches_torch(row):
    run_double_backward(row)


INT_CASES = {
    "nansum": lambda m, x: m.nansum(x, 0),
    "median": lambda m, x: m.median(x),
    "median-dim": lambda m, x: tuple(m.median(x, 1)),
    "nanmedian-dim": lambda m, x: tuple(x.nanmedian(0)),
    "mode": lambda m, x: tuple(m.mode(x, 1)),
    "aminmax": lambda m, x: tuple(m.aminmax(x, dim=0)),
    "cummax": lambda m, x: tuple(m.cummax(x, 1)),
    "cummin": lambda m, x: tuple(m.cummin(x, 0)),
    "msort": lambda m, x: m.msort(x),
    "unique": lambda m, x: m.unique(x, return_inverse=True, return_counts=True),
    "cov": lambda m, x: m.cov(x),
}


@pytest.mark.parametrize("name", list(INT_CASES))
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_and_bool_inputs_match_torch_values_and_dtypes(name, dtype):
    if dtype == "bool" and name in ("nanmedian-dim", "median", "median-dim", "cov"):
        pytest.skip("torch has no bool kernel for these")
    a = np.random.default_rng(3).integers(0, 4, (4, 5)).astype(dtype)
    got, want = INT_CASES[name](dg, dg.tensor(a)), INT_CASES[name](torch, torch.tensor(a))
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.dtype.name == str(w.dtype).split(".")[-1]
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6)


FLOAT32_CASES = {
    "nanmean": lambda m, x: m.nanmean(x, 1),
    "quantile": lambda m, x: m.quantile(x, m.tensor([0.1, 0.33, 0.9]), dim=0),
    "nanquantile-nearest": lambda m, x: m.nanquantile(x, 0.35, interpolation="nearest"),
    "logcumsumexp": lambda m, x: m.logcumsumexp(x, 1),
    "median-dim": lambda m, x: m.median(x, 0).values,
    "cov": lambda m, x: m.cov(x),
    "corrcoef": lambda m, x: m.corrcoef(x),
    "histc": lambda m, x: m.histc(x, bins=6),
}


@pytest.mark.parametrize("name", list(FLOAT32_CASES))
def test_float32_keeps_float32_and_matches_torch(name):
    a = np.random.default_rng(4).standard_normal((5, 7)).astype(np.float32)
    x, tx = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    got, want = FLOAT32_CASES[name](dg, x), FLOAT32_CASES[name](torch, tx)
    assert got.dtype == dg.float32 and want.dtype == torch.float32
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=2e-6, atol=1e-6)
    if want.requires_grad:
        got.sum().backward()
        want.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=2e-5, atol=1e-6)


def test_results_are_named_tuples_like_torch():
    x = dg.tensor(np.array([[3.0, 1.0, 2.0], [0.5, 4.0, 4.0]]))
    assert x.median(1).values.tolist() == [2.0, 4.0] and x.median(1).indices.tolist() == [2, 1]
    assert x.mode(1).indices.tolist() == [1, 2] and x.nanmedian(0).values.tolist() == [0.5, 1.0, 2.0]
    lo, hi = x.aminmax()
    assert (x.aminmax(dim=1).min.tolist(), hi.item(), lo.item()) == ([1.0, 0.5], 4.0, 0.5)
    assert x.cummax(1).indices.tolist() == [[0, 0, 0], [0, 1, 2]] and x.cummin(1).values.tolist()[1] == [0.5] * 3


def test_unique_values_require_grad_but_backward_raises_like_torch():
    x = dg.tensor(np.array([2.0, 1.0, 2.0]), requires_grad=True)
    u = dg.unique(x)
    assert u.requires_grad and u.tolist() == [1.0, 2.0]
    with pytest.raises(dg.errors.AutogradError, match="derivative for 'unique' is not implemented"):
        u.sum().backward()
    with pytest.raises(dg.errors.AutogradError, match="not implemented"):
        dg.unique_consecutive(x).sum().backward()


def test_empty_inputs_match_torch():
    e = np.zeros((0,))
    for f in [lambda m, t: m.median(t), lambda m, t: m.nansum(t), lambda m, t: m.nanmean(t)]:
        got, want = f(dg, dg.tensor(e)), f(torch, torch.tensor(e))
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    for f in [lambda m, t: m.histc(t, bins=3), lambda m, t: m.unique(t), lambda m, t: m.logcumsumexp(t, 0)]:
        got, want = f(dg, dg.tensor(e)), f(torch, torch.tensor(e))
        np.testing.assert_array_equal(got.numpy(), want.numpy())


EMPTY_DIM_CASES = {
    "unique-dim0-of-empty": lambda m, x: m.unique(x, dim=0, return_inverse=True, return_counts=True),
    "cummax-empty-bool": lambda m, x: tuple(m.cummax(x > 0, 0)),
    "mode-0d": lambda m, x: tuple(m.mode(x.sum() > 0)),
    "median-0d-dim": lambda m, x: tuple(m.median(x.sum(), 0, keepdim=True)),
}


@pytest.mark.parametrize("name", list(EMPTY_DIM_CASES))
def test_empty_and_0d_edge_cases_match_torch_shapes_and_dtypes(name):
    got, want = EMPTY_DIM_CASES[name](dg, dg.zeros(0, 3)), EMPTY_DIM_CASES[name](torch, torch.zeros(0, 3))
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == tuple(w.shape) and g.dtype.name == str(w.dtype).split(".")[-1]
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def test_cov_without_degrees_of_freedom_warns_and_gives_inf_like_torch():
    a = np.array([[1.0, 2.0, 4.0]])
    with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
        got = dg.cov(dg.tensor(a), correction=5)
    with pytest.warns(UserWarning):
        want = torch.cov(torch.tensor(a), correction=5)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


BAD = [
    (lambda: dg.quantile(dg.tensor([1, 2]), 0.5), dg.errors.DTypeError, "quantile.*float or double.*int64"),
    (lambda: dg.quantile(dg.tensor([1.0, 2.0]), 1.5), dg.errors.InputRangeError, r"q values must be in the range"),
    (lambda: dg.quantile(dg.tensor([1.0]), dg.tensor([0.5], dtype=dg.float64)), TypeError, "same dtype as the input"),
    (lambda: dg.quantile(dg.tensor([1.0]), dg.tensor([[0.5]])), ValueError, r"scalar or 1D tensor.*\(1, 1\)"),
    (lambda: dg.quantile(dg.zeros(0), 0.5), ValueError, "non-empty"),
    (lambda: dg.nanquantile(dg.ones(3), 0.5, interpolation="cubic"), ValueError, "interpolation must be one of"),
    (lambda: dg.nanmean(dg.tensor([1, 2])), dg.errors.DTypeError, "nanmean.*int64"),
    (lambda: dg.logcumsumexp(dg.tensor([1, 2]), 0), dg.errors.DTypeError, "logcumsumexp.*int64"),
    (lambda: dg.median(dg.zeros(2, 0), 1), dg.errors.ShapeError, r"median.*dim 1.*\(2, 0\)"),
    (lambda: dg.mode(dg.zeros(2, 3), 2), dg.errors.ShapeError, "mode: Dimension out of range"),
    (lambda: dg.aminmax(dg.zeros(0)), dg.errors.ShapeError, "aminmax.*empty"),
    (lambda: dg.aminmax(dg.zeros(3, 0), dim=1), dg.errors.ShapeError, r"aminmax.*\(3, 0\)"),
    (lambda: dg.histc(dg.tensor([1, 2]), bins=3), dg.errors.DTypeError, "histc.*int64"),
    (lambda: dg.histc(dg.ones(3), bins=0), dg.errors.InputRangeError, "bins must be > 0"),
    (lambda: dg.histc(dg.tensor([1.0, float("nan")])), dg.errors.InputRangeError, "histc.*not finite"),
    (lambda: dg.histc(dg.ones(3), min=2, max=1), dg.errors.InputRangeError, "max must be larger than min"),
    (lambda: dg.cov(dg.zeros(2, 2, 2)), dg.errors.ShapeError, "two or fewer dimensions"),
    (lambda: dg.cov(dg.ones(2, 3), fweights=dg.ones(3)), dg.errors.DTypeError, "fweights to have integral dtype"),
    (lambda: dg.cov(dg.ones(2, 3), fweights=dg.tensor([1, -1, 2])), ValueError, "fweights cannot be negative"),
    (lambda: dg.cov(dg.ones(2, 3), aweights=dg.tensor([1, 1, 2])), dg.errors.DTypeError, "aweights.*floating"),
    (lambda: dg.cov(dg.ones(2, 3), aweights=dg.ones(4)), dg.errors.ShapeError, "same numel.*observations"),
    (lambda: dg.unique(dg.tensor(1.0), dim=0), dg.errors.ShapeError, "unique.*0-d"),
    (lambda: dg.unique(dg.ones(2, 0), dim=0), dg.errors.ShapeError, r"0 sized dimensions.*\(2, 0\)"),
    (lambda: dg.median(dg.ones(2, dtype=dg.bool_)), dg.errors.DTypeError, "median.*bool"),
    (lambda: dg.nanmedian(dg.ones(2, dtype=dg.bool_), 0), dg.errors.DTypeError, "nanmedian.*bool"),
    (lambda: dg.cummax(dg.ones(2), None), TypeError, "cummax.*dim.*int"),
    (lambda: dg.mode(dg.ones(2), None), TypeError, "mode.*dim.*int"),
    (lambda: dg.logcumsumexp(dg.ones(2), None), TypeError, "logcumsumexp.*dim.*int"),
]


@pytest.mark.parametrize("fn,err,match", BAD)
def test_bad_input_raises_a_clear_error(fn, err, match):
    with pytest.raises(err, match=match):
        fn()


CAPTURED = {
    "sort": lambda x: dg.sort(x, 1).values,
    "topk-indices": lambda x: dg.topk(x, 2).indices,
    "median": lambda x: dg.median(x, 1).values,
    "median-indices": lambda x: dg.median(x, 0).indices,
    "median-all": lambda x: dg.median(x),
    "nanmedian": lambda x: x.nanmedian(1).values,
    "mode-indices": lambda x: dg.mode(x.round(), 1).indices,
    "cummax": lambda x: dg.cummax(x, 1).values,
    "cummin-indices": lambda x: dg.cummin(x, 0).indices,
    "quantile": lambda x: dg.quantile(x, 0.3, 1),
    "nanquantile": lambda x: dg.nanquantile(x, dg.tensor([0.3, 0.5], dtype=dg.float64), interpolation="midpoint"),
    "msort": lambda x: dg.msort(x),
    "logcumsumexp": lambda x: dg.logcumsumexp(x, 1),
}


@pytest.mark.parametrize("name", list(CAPTURED))
def test_captured_graph_picks_again_for_each_new_input(name):
    # the chosen positions are op outputs, so the graph recomputes them (the example's were baked in before)
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import Runner

    rng = np.random.default_rng(5)
    x, y = (dg.tensor(rng.standard_normal((4, 6))) for _ in range(2))
    graph, _, _ = capture(CAPTURED[name], [x])
    (out,) = Runner(graph)(y.array)
    np.testing.assert_array_equal(out, CAPTURED[name](y).array)


@pytest.mark.parametrize("name", ["median", "quantile", "cummax", "logcumsumexp", "nanquantile"])
def test_captured_gradients_match_eager_on_a_new_input(name):
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import Runner

    rng = np.random.default_rng(6)
    x, y = (dg.tensor(rng.standard_normal((4, 6))) for _ in range(2))
    w = dg.tensor(rng.standard_normal(6), requires_grad=True)
    fn = lambda x: CAPTURED[name](x * w).sum()  # noqa: E731
    graph, params, _ = capture(fn, [x], grad_of=[w])
    loss, grad = Runner(graph)(y.array, *[p.array for p in params])
    fn(y).backward()
    np.testing.assert_allclose(loss, fn(y).array, rtol=1e-12)
    np.testing.assert_allclose(grad, w.grad.array, rtol=1e-12)


@pytest.mark.parametrize("fn", [lambda x: dg.unique(x), lambda x: dg.unique_consecutive(x), lambda x: dg.histc(x, 4)])
def test_capture_stops_where_values_are_read_on_the_host(fn):
    from distgraph.graph.capture import CaptureError, capture

    with pytest.raises(CaptureError, match="on the host"):
        capture(lambda x: fn(x * 3), [dg.tensor(np.random.default_rng(7).standard_normal(6))])
