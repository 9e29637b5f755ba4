"""ops/tensor_extra.py against torch float64: cumsum_/cumprod_, renorm/renorm_, the matrix transposes
(H, mH, mT, adjoint), dtype shorthands and metadata; the random fills against their distribution's
moments and bounds (large samples) and torch's refusals; and the fixes: floor/ceil/trunc/round/frac
refuse bool (frac every non-float) and bincount refuses bool and stops graph capture."""

import math

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError, CaptureError, DTypeError, InputRangeError, ShapeError
from distgraph.graph.capture import capture
from tests.ops._table import POS, Table, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

T = Table()
T.op("cumsum_", lambda m, a: (a * 1).cumsum_(1), (2, 3))
T.op("cumsum_-negative-dim", lambda m, a: (a * 1).cumsum_(-1) * 2, (2, 3, 4))
T.op("cumprod_", lambda m, a: (a * 1).cumprod_(0), (3, 2), domain=POS)
T.op("cumsum_-of-view", lambda m, a: _through_view(m, a), (3, 4))
T.op("renorm-p2-dim0", lambda m, a: m.renorm(a * 2, 2, 0, 1.0), (3, 4, 2))
T.op("renorm-p1-dim1", lambda m, a: (a * 2).renorm(1, 1, 2.0), (3, 4, 2))
T.op("renorm-p3-last", lambda m, a: (a * 2).renorm(3, -1, 0.5), (3, 4, 2))
T.op("renorm-nothing-over", lambda m, a: a.renorm(2, 0, 100.0), (3, 4))
T.op("renorm_", lambda m, a: (a * 2).renorm_(2, 1, 1.5), (3, 4))
T.op("fill_diagonal_", lambda m, a: (a * 1).fill_diagonal_(2.5) * 3, (3, 3))
T.op("fill_diagonal_-tall", lambda m, a: (a * 1).fill_diagonal_(-1.0), (7, 3))
T.op("fill_diagonal_-tall-wrap", lambda m, a: (a * 1).fill_diagonal_(-1.0, wrap=True), (7, 3))
T.op("fill_diagonal_-wide", lambda m, a: (a * 1).fill_diagonal_(0.0, True), (3, 7))
T.op("fill_diagonal_-cube", lambda m, a: (a * 1).fill_diagonal_(4.0), (2, 2, 2))
T.op("H", lambda m, a: a.H * 2, (2, 3))
T.op("mH", lambda m, a: a.mH, (4, 2, 3))
T.op("mT", lambda m, a: a.mT, (4, 2, 3))
T.op("adjoint", lambda m, a: a.adjoint(), (2, 3))
T.op("adjoint-function-batched", lambda m, a: m.adjoint(a), (4, 2, 3))


def _through_view(m, a):
    y = a * 1
    y[1:].cumsum_(1)
    return y


@pytest.mark.parametrize("row", T.rows())
def test_parity(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "float32"])
@pytest.mark.parametrize("name", ["cumsum_", "cumprod_"])
def test_cumulative_in_place_keeps_the_dtype(name, dtype):
    a = np.array([[1, 2, 3], [4, 5, 6]])
    x, tx = dg.tensor(a, dtype=getattr(dg, dtype)), torch.tensor(a, dtype=getattr(torch, dtype))
    assert getattr(x, name)(1) is x
    getattr(tx, name)(1)
    assert x.dtype.name == dtype and x._version == 1
    np.testing.assert_array_equal(x.numpy(), tx.numpy())


def test_cumulative_in_place_refusals():
    with pytest.raises(DTypeError, match="cumsum_: Bad in-place call: input tensor dtype float32 and output"):
        dg.zeros(3).cumsum_(0, dtype=dg.int64)
    with pytest.raises(DTypeError, match="cumsum_: not implemented for bool"):
        dg.tensor([True, False]).cumsum_(0)
    with pytest.raises(AutogradError, match="cumsum_: a leaf Variable that requires grad"):
        dg.zeros(3, requires_grad=True).cumsum_(0)
    with pytest.raises(ShapeError, match="Dimension out of range"):
        dg.zeros(3).cumprod_(1)


def test_renorm_refusals():
    with pytest.raises(InputRangeError, match="renorm: non-positive-norm"):
        dg.ones(2, 2).renorm(0, 0, 1.0)
    with pytest.raises(InputRangeError, match="maxnorm"):
        dg.ones(2, 2).renorm(2, 0, -1.0)
    with pytest.raises(ShapeError, match="renorm: input needs at least 2 dimensions"):
        dg.ones(3).renorm(2, 0, 1.0)
    with pytest.raises(DTypeError, match="renorm"):
        dg.ones(2, 2, dtype=dg.int64).renorm(2, 0, 1.0)


def test_matrix_transposes_refuse_as_torch():
    for name, t in (("H", dg.ones(2, 3, 4)), ("H", dg.ones(3)), ("mH", dg.ones(3)), ("mT", dg.ones(3))):
        with pytest.raises(ShapeError, match=f"tensor.{name} is only supported on matrices"):
            getattr(t, name)
    with pytest.raises(ShapeError, match="adjoint is only supported"):
        dg.ones(3).adjoint()
    assert dg.tensor(2.0).H.shape == () and dg.tensor(2.0).mT.shape == ()
    x = dg.zeros(2, 3)
    x.mT[0, 1] = 1.0  # views, as torch's
    assert x[1, 0].item() == 1.0


@pytest.mark.parametrize("name,dtype", [("byte", "uint8"), ("char", "int8"), ("short", "int16")])
def test_dtype_shorthands(name, dtype):
    a = np.array([-1.5, 2.7, 300.0])
    out, ref = getattr(dg.tensor(a[:2]), name)(), getattr(torch.tensor(a[:2]), name)()
    assert out.dtype.name == dtype == str(ref.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_bfloat16_is_refused_clearly():
    with pytest.raises(DTypeError, match="bfloat16: .*no bfloat16 dtype"):
        dg.ones(2).bfloat16()


def test_metadata():
    for dt in ("float32", "float64", "int16", "bool"):
        x, tx = dg.ones(2, 3, dtype=getattr(dg, dt)), torch.ones(2, 3, dtype=getattr(torch, dt))
        assert (x.itemsize, x.nbytes, x.element_size(), x.get_device()) == (
            tx.itemsize,
            tx.nbytes,
            tx.element_size(),
            tx.get_device(),
        )
        assert dg.get_device(x) == torch.get_device(tx)


@pytest.mark.parametrize("dtype", ["int64", "bool", "float32"])
def test_fill_diagonal_casts_the_value_as_torch(dtype):
    x, tx = dg.zeros(3, 4, dtype=getattr(dg, dtype)), torch.zeros(3, 4, dtype=getattr(torch, dtype))
    assert x.fill_diagonal_(2.7) is x
    tx.fill_diagonal_(2.7)
    np.testing.assert_array_equal(x.numpy(), tx.numpy())
    assert x._version == 1


def test_fill_diagonal_refusals():
    with pytest.raises(ShapeError, match="fill_diagonal_: dimensions must larger than 1"):
        dg.zeros(3).fill_diagonal_(1)
    with pytest.raises(ShapeError, match="fill_diagonal_: all dimensions of input must be of equal length"):
        dg.zeros(2, 3, 3).fill_diagonal_(1)
    with pytest.raises(AutogradError, match="fill_diagonal_: a leaf Variable that requires grad"):
        dg.zeros(3, 3, requires_grad=True).fill_diagonal_(1)


def test_apply_and_map_as_torch():
    for a in (np.arange(6.0).reshape(2, 3), np.arange(6).reshape(2, 3)):
        x, tx = dg.tensor(a), torch.tensor(a)
        assert x.apply_(lambda v: v / 2 + 1) is x
        tx.apply_(lambda v: v / 2 + 1)
        np.testing.assert_array_equal(x.numpy(), tx.numpy())
        other = a[0] + 1
        x.map_(dg.tensor(other), lambda u, v: u * v - 1)
        tx.map_(torch.tensor(other), lambda u, v: u * v - 1)
        np.testing.assert_array_equal(x.numpy(), tx.numpy())
        assert x._version == 2
    b = dg.zeros(2, dtype=dg.bool)
    b.apply_(lambda v: 3)
    assert b.numpy().tolist() == [True, True]
    base = dg.zeros(2, 3)
    base[0].apply_(lambda v: 7.0)  # through a view
    assert base.numpy()[0].tolist() == [7.0] * 3 and base.numpy()[1].tolist() == [0.0] * 3


def test_apply_and_map_refusals():
    with pytest.raises(AutogradError, match=r"Can't call apply_\(\) on Variable that requires grad"):
        (dg.zeros(2, requires_grad=True) * 1).apply_(lambda v: v)
    with pytest.raises(AutogradError, match=r"Can't call map_\(\) on Variable that requires grad"):
        dg.zeros(2, requires_grad=True).map_(dg.zeros(2), lambda u, v: u)
    with pytest.raises(DTypeError, match="apply_: the callable returned str"):
        dg.zeros(2).apply_(lambda v: "a")
    with pytest.raises(DTypeError, match="map_: expected a float32 tensor for 'other' \\(got int64\\)"):
        dg.zeros(3).map_(dg.zeros(3, dtype=dg.int64), lambda u, v: u)
    with pytest.raises(ShapeError):
        dg.zeros(3).map_(dg.zeros(2), lambda u, v: u)
    with pytest.raises(AutogradError, match="apply_: unsupported operation: more than one element"):
        dg.zeros(1).expand(3).apply_(lambda v: v)


@pytest.mark.parametrize("size,stride", [((2, 3), (1, 2)), ((2, 3), (3, 1)), ((2, 3), (0, 1)), ((4, 0, 2), (5, 1, 2))])
def test_new_empty_strided_has_the_layout(size, stride):
    x = dg.ones(1, dtype=dg.float64).new_empty_strided(size, stride)
    t = torch.ones(1, dtype=torch.float64).new_empty_strided(size, stride)
    assert x.shape == tuple(t.shape) and x.stride() == t.stride() and x.is_contiguous() == t.is_contiguous()
    assert x.dtype == dg.float64 and not x.requires_grad
    y = dg.ones(1).new_empty_strided((2, 2), (2, 1), dtype=dg.int64, requires_grad=False)
    assert y.dtype == dg.int64


def test_new_empty_strided_refusals():
    with pytest.raises(
        ShapeError, match="dimensionality of sizes \\(2\\) must match dimensionality of strides \\(1\\)"
    ):
        dg.ones(1).new_empty_strided((2, 3), (1,))
    with pytest.raises(ShapeError, match="negative"):
        dg.ones(1).new_empty_strided((2, 3), (-1, 1))


# ---- random fills ------------------------------------------------------------------------------------------
N = 200_000


def _sample(name, *args, dtype=dg.float64):
    dg.manual_seed(0)
    x = dg.empty(N, dtype=dtype)
    assert getattr(x, name)(*args) is x and x._version == 1
    return x.numpy()


def test_exponential_moments():
    s = _sample("exponential_", 2.0)
    assert s.min() > 0 and abs(s.mean() - 0.5) < 0.01 and abs(s.std() - 0.5) < 0.01


def test_cauchy_quantiles():
    s = _sample("cauchy_", 1.0, 2.0)
    q1, med, q3 = np.quantile(s, [0.25, 0.5, 0.75])  # median ± sigma
    assert abs(med - 1.0) < 0.05 and abs(q1 + 1.0) < 0.05 and abs(q3 - 3.0) < 0.05


def test_log_normal_moments():
    s = _sample("log_normal_", 0.5, 0.25)
    assert s.min() > 0
    assert abs(np.log(s).mean() - 0.5) < 0.005 and abs(np.log(s).std() - 0.25) < 0.005
    assert abs(s.mean() - math.exp(0.5 + 0.25**2 / 2)) < 0.01


@pytest.mark.parametrize("dtype", [dg.float32, dg.int64, dg.uint8])
def test_geometric_moments(dtype):
    s = _sample("geometric_", 0.25, dtype=dtype).astype(np.float64)
    assert s.min() == 1 and np.all(s == np.round(s))
    assert abs(s.mean() - 4.0) < 0.05 and abs(s.var() - 12.0) < 0.5  # (1 - p) / p**2


@pytest.mark.parametrize("dtype", [dg.float32, dg.int64, dg.int8])
def test_random_bounds_and_uniformity(dtype):
    s = _sample("random_", -3, 5, dtype=dtype)
    counts = np.bincount((s + 3).astype(np.int64))
    assert s.min() == -3 and s.max() == 4 and len(counts) == 8
    assert np.all(np.abs(counts / N - 1 / 8) < 0.005)
    s = _sample("random_", 5, dtype=dtype)
    assert s.min() == 0 and s.max() == 4


def test_random_without_bounds_spans_the_dtype():
    assert _sample("random_", dtype=dg.uint8).max() == 255
    f = _sample("random_", dtype=dg.float32)
    assert f.min() >= 0 and f.max() <= 2**24 and f.max() > 2**23 and np.all(f == np.round(f))
    b = _sample("random_", dtype=dg.bool)
    assert 0.49 < b.mean() < 0.51


@pytest.mark.parametrize(
    "call,err,match",
    [
        (lambda t: t.exponential_(0), InputRangeError, "exponential_ expects lambda > 0.0"),
        (lambda t: t.cauchy_(0, 0), InputRangeError, "cauchy_ expects sigma > 0.0"),
        (lambda t: t.geometric_(1), InputRangeError, r"geometric_ expects p to be in \(0, 1\)"),
        (lambda t: t.log_normal_(1, 0), InputRangeError, "log_normal_ expects std > 0.0"),
        (lambda t: t.random_(5, 5), InputRangeError, "random_ expects 'from' to be less than 'to'"),
        (lambda t: t.long().exponential_(), DTypeError, "continuous probability distribution"),
        (lambda t: t.long().cauchy_(), DTypeError, "continuous probability distribution"),
        (lambda t: t.long().log_normal_(), DTypeError, "log_normal_"),
        (lambda t: t.bool().geometric_(0.5), DTypeError, "geometric_"),
        (lambda t: t.byte().random_(0, 300), InputRangeError, "to - 1 = 299 is out of bounds for uint8"),
        (lambda t: t.byte().random_(-1, 3), InputRangeError, "from=-1 is out of bounds for uint8"),
        (lambda t: t.bool().random_(5), InputRangeError, "out of bounds for bool"),
    ],
)
def test_random_fill_refusals(call, err, match):
    with pytest.raises(err, match=match):
        call(dg.zeros(3))


def test_random_fill_of_tensor_that_requires_grad_is_recorded_as_torch():
    with pytest.raises(AutogradError, match="exponential_: a leaf Variable that requires grad"):
        dg.zeros(3, requires_grad=True).exponential_()
    x = dg.randn(3, requires_grad=True)
    y = x * 1
    y.exponential_()
    assert y.grad_fn is not None
    (y * 2 + x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(3))  # the fill's old value gets zero gradient


# ---- fixes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["floor", "ceil", "trunc", "round", "frac"])
def test_rounding_refuses_bool(name):
    with pytest.raises(RuntimeError, match="not implemented for 'Bool'"):
        getattr(torch.tensor([True, False]), name)()
    with pytest.raises(DTypeError, match=f"{name}: not implemented for this dtype"):
        getattr(dg.tensor([True, False]), name)()
    with pytest.raises(DTypeError, match=f"{name}_?: not implemented for this dtype"):
        getattr(dg.tensor([True, False]), name + "_")()


@pytest.mark.parametrize("name", ["floor", "ceil", "trunc", "round"])
@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_rounding_of_integers_is_the_identity(name, dtype):
    x = dg.tensor([1, 2, 7], dtype=getattr(dg, dtype))
    out = getattr(x, name)()
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out.numpy(), x.numpy())


def test_frac_refuses_integers_as_torch():
    with pytest.raises(RuntimeError, match="not implemented for 'Long'"):
        torch.tensor([1, 2]).frac()
    with pytest.raises(DTypeError, match="frac: not implemented"):
        dg.tensor([1, 2]).frac()


def test_bincount_refuses_bool():
    with pytest.raises(RuntimeError, match="not implemented for 'Bool'"):
        torch.bincount(torch.tensor([True, False]))
    with pytest.raises(DTypeError, match="bincount: .*not implemented for bool"):
        dg.bincount(dg.tensor([True, False]))


def test_bincount_stops_capture():
    with pytest.raises(CaptureError, match="bincount"):
        capture(lambda a: dg.bincount(a * 2), (dg.tensor([1, 2, 2]),))


@pytest.mark.parametrize(
    "source,destination,match",
    [
        ((0, 0), (1, 2), "movedim: repeated dim in `source`"),
        ((0, 1), (2, -1), "movedim: repeated dim in `destination`"),
        ((0, 1), (1,), "movedim: source .* and destination .* should contain the same number of dims"),
    ],
)
def test_movedim_refuses_bad_dim_lists_as_torch(source, destination, match):
    with pytest.raises(RuntimeError, match="movedim: "):
        torch.moveaxis(torch.zeros(2, 3, 4), source, destination)
    for fn in (dg.moveaxis, dg.movedim, dg.Tensor.movedim):
        with pytest.raises(ShapeError, match=match):
            fn(dg.zeros(2, 3, 4), source, destination)


S = Table()
S.op("swapaxes", lambda m, a: m.swapaxes(a, 0, 2), (2, 3, 4))
S.op("swapdims-method", lambda m, a: a.swapdims(-1, 1), (2, 3, 4))
S.op("swapaxes-same", lambda m, a: a.swapaxes(1, 1), (2, 3))
S.op("moveaxis", lambda m, a: m.moveaxis(a, (0, 1), (2, 0)), (2, 3, 4))
S.op("moveaxis-negative", lambda m, a: m.moveaxis(a, -1, 0), (2, 3, 4))
S.op("swapaxes-0d", lambda m, a: m.swapaxes(a, 0, -1), ())


@pytest.mark.parametrize("row", S.rows())
def test_swaps_and_moves_parity(row, device):
    run_parity(row, device)
