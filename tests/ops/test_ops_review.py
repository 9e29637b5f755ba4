"""Regressions from a review of the core ops, each against torch: float16 reductions and scans accumulate in
float32; an integer tensor divided by a number out of its range divides as a float; integer trunc division is
exact; gather/scatter/index_select refuse negative indices; single-dim ops refuse a tuple dim; numpy scalars
promote as Python numbers; chunk(0) and a mismatched copy_ raise distgraph errors; and the Tensor method forms
torch has (varargs and keywords, shift operators, view(dtype), scatter's reduce)."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import errors

torch = pytest.importorskip("torch")

F16_TOL = {"rtol": 2e-3, "atol": 1e-6}  # two float16 ulps: torch's float16 sums round partial sums to float16


def _np(t):
    return np.asarray(t.detach().numpy())


def _both(fn, *arrays, grad=False):
    """fn(library, *tensors) on distgraph and torch: (outputs, input gradients) of each, the latter after
    backward of the output's sum when `grad`."""
    out = []
    for lib in (dg, torch):
        xs = [lib.tensor(a, requires_grad=grad) for a in arrays]
        y = fn(lib, *xs)
        if grad:
            y.float().sum().backward()
        out.append((y, [x.grad for x in xs] if grad else []))
    return out


# ---- 1. float16 accumulates in float32 ------------------------------------------------------------------------
F16_BIG = np.random.default_rng(0).uniform(0, 1, (64, 1025)).astype(np.float16)  # 65600 elements > 65504

F16_REDUCTIONS = {  # (fn, whether its gradient is compared too)
    "mean": (lambda m, x: x.mean(), True),
    "mean-dim": (lambda m, x: x.reshape(65600).mean(0), True),
    "var": (lambda m, x: x.var(), True),
    "std": (lambda m, x: x.std(), True),
    "var-dim": (lambda m, x: x.reshape(65600, 1).var(0), True),
    "std-dim": (lambda m, x: x.reshape(65600, 1).std(0, correction=0), True),
    "norm": (lambda m, x: (x * 20).norm(), True),
    "var_mean": (lambda m, x: m.var_mean(x)[0] + m.var_mean(x)[1], False),
    "nanmean": (lambda m, x: m.nanmean(x), False),
    "norm-overflow": (lambda m, x: m.full((300,), 20.0, dtype=m.float16).norm(), False),
    "cumsum": (lambda m, x: m.ones(5000, dtype=m.float16).cumsum(0)[-1], False),
    "sum-strided-dim": (lambda m, x: m.ones(5000, 3, dtype=m.float16).sum(0), False),
}


@pytest.mark.parametrize("name", F16_REDUCTIONS)
def test_float16_reductions_accumulate_in_float32_as_torch(name):
    fn, grad = F16_REDUCTIONS[name]
    (d, dg_grad), (t, t_grad) = _both(fn, F16_BIG, grad=grad)
    assert d.dtype == dg.float16 and np.isfinite(_np(d)).all()
    np.testing.assert_allclose(_np(d).astype(np.float64), _np(t).astype(np.float64), **F16_TOL)
    for g, tg in zip(dg_grad, t_grad):
        assert g.dtype == dg.float16 and np.abs(_np(g)).max() > 0  # 1/65600 is a float16 subnormal, not 0
        np.testing.assert_allclose(_np(g).astype(np.float64), _np(tg).astype(np.float64), rtol=1e-2, atol=2e-7)


def test_float16_cumsum_gradient_matches_torch():
    a = np.ones(5000, np.float16)
    (d, [gd]), (t, [gt]) = _both(lambda m, x: x.cumsum(0), a, grad=True)
    np.testing.assert_array_equal(_np(d), _np(t))
    np.testing.assert_array_equal(_np(gd), _np(gt))  # 5000, 4999, ... in float16


# ---- 2. an integer tensor meets a number out of its range as a float ---------------------------------------------
FLOAT_RESULTS = {
    "uint8/256": lambda m: m.tensor([0, 128, 255], dtype=m.uint8) / 256,
    "true_divide-int8": lambda m: m.true_divide(m.tensor([-128, 5, 127], dtype=m.int8), 1000),
    "uint8/0d-tensor": lambda m: m.tensor([0, 128, 255], dtype=m.uint8) / m.tensor(256),
    "300/uint8": lambda m: 300 / m.tensor([1, 2, 255], dtype=m.uint8),
    "atan2-uint8": lambda m: m.atan2(m.tensor([0, 128, 255], dtype=m.uint8), m.tensor(-1)),
    "atan2-int-number": lambda m: m.atan2(m.tensor([1, 2], dtype=m.int8), m.tensor(-300)),
    "copysign-uint8": lambda m: m.copysign(m.tensor([0, 128, 255], dtype=m.uint8), m.tensor(-1)),
    "int64/int64": lambda m: m.tensor([16777217, 7]) / m.tensor([1, 2]),
}


@pytest.mark.parametrize("name", FLOAT_RESULTS)
def test_integer_tensor_and_out_of_range_number_divide_as_floats(name):
    d, t = FLOAT_RESULTS[name](dg), FLOAT_RESULTS[name](torch)
    assert d.dtype.name == str(t.dtype).removeprefix("torch.")
    np.testing.assert_allclose(_np(d), _np(t), rtol=1e-6)


# ---- 3. integer trunc division is exact ----------------------------------------------------------------------
INT_DIVISIONS = {
    "trunc": lambda m, a: m.div(a, 10, rounding_mode="trunc"),
    "trunc-negative-divisor": lambda m, a: m.div(a, -7, rounding_mode="trunc"),
    "trunc-by-1": lambda m, a: m.div(a, 1, rounding_mode="trunc"),
    "trunc-tensor": lambda m, a: m.div(a, m.tensor([3, -3, 10, -10, 7]), rounding_mode="trunc"),
    "trunc-int32": lambda m, a: m.div(a.int(), 9, rounding_mode="trunc"),
    "floor": lambda m, a: m.div(a, -7, rounding_mode="floor"),
    "floordiv": lambda m, a: a // 10,
    "remainder": lambda m, a: m.remainder(a, -7),
    "fmod": lambda m, a: m.fmod(a, -7),
}
BIG_INTS = [16777217, 123456789, -123456789, -16777219, 2**31 - 1]


@pytest.mark.parametrize("name", INT_DIVISIONS)
def test_integer_division_is_exact_beyond_float32s_integers(name):
    fn = INT_DIVISIONS[name]
    d, t = fn(dg, dg.tensor(BIG_INTS)), fn(torch, torch.tensor(BIG_INTS))
    assert d.dtype.name == str(t.dtype).removeprefix("torch.")
    assert d.tolist() == t.tolist()


def test_integer_trunc_division_by_zero_raises():
    with pytest.raises(errors.DivisionByZeroError, match="div"):
        dg.div(dg.tensor([1, 2]), 0, rounding_mode="trunc")


# ---- 4. negative indices -----------------------------------------------------------------------------------------
def _index_ops(m):
    x, i, one = m.tensor([1.0, 2.0, 3.0]), m.tensor([-1]), m.ones(1)
    return {
        "gather": lambda: m.gather(x, 0, i),
        "scatter": lambda: m.zeros(3).scatter(0, i, one),
        "scatter-value": lambda: m.zeros(3).scatter(0, i, 2.0),
        "scatter_": lambda: m.zeros(3).scatter_(0, i, one),
        "scatter_add": lambda: m.zeros(3).scatter_add(0, i, one),
        "scatter_add_": lambda: m.zeros(3).scatter_add_(0, i, one),
        "scatter_reduce": lambda: m.zeros(3).scatter_reduce(0, i, one, "sum"),
        "index_select": lambda: m.index_select(x, 0, i),
        "index_add": lambda: m.zeros(3).index_add(0, i, one),
        "index_copy": lambda: m.zeros(3).index_copy(0, i, one),
        "index_reduce": lambda: m.zeros(3).index_reduce(0, i, one, "prod"),
        "take_along_dim-flat": lambda: m.take_along_dim(x, i),
        # torch takes these (counted from the end)
        "index_fill": lambda: m.zeros(3).index_fill(0, i, 5.0),
        "take_along_dim": lambda: m.take_along_dim(m.arange(12.0).reshape(3, 4), m.tensor([[-1, 0, -3, 2]]), 0),
        "take_along_dim-1d": lambda: m.take_along_dim(x, i, 0),
        "take": lambda: m.take(x, i),
        "index_put": lambda: m.zeros(3).index_put((i,), one),
    }


@pytest.mark.parametrize("name", list(_index_ops(dg)))
def test_negative_indices_are_refused_or_taken_as_torch_does(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's index_reduce is "in beta"
        try:
            want = _index_ops(torch)[name]().tolist()
        except (RuntimeError, IndexError):
            want = None
    if want is None:
        with pytest.raises(errors.IndexOutOfRangeError, match="out of"):
            _index_ops(dg)[name]()
    else:
        assert _index_ops(dg)[name]().tolist() == want


# ---- 5. single-dim ops refuse a tuple ------------------------------------------------------------------------------
SINGLE_DIM = {
    "sort": lambda m, x: m.sort(x, (-1,)),
    "argsort": lambda m, x: m.argsort(x, (1,)),
    "cumsum": lambda m, x: m.cumsum(x, (1, 0)),
    "cumprod": lambda m, x: m.cumprod(x, (1,)),
    "argmax": lambda m, x: m.argmax(x, (1,)),
    "topk": lambda m, x: m.topk(x, 1, (1,)),
    "softmax": lambda m, x: m.softmax(x, (1,)),
    "gather": lambda m, x: m.gather(x, (1,), m.tensor([[0], [1]])),
    "index_select": lambda m, x: m.index_select(x, (0,), m.tensor([0])),
    "narrow": lambda m, x: m.narrow(x, (1,), 0, 1),
}


@pytest.mark.parametrize("name", SINGLE_DIM)
def test_single_dim_ops_refuse_a_tuple_dim_naming_the_op(name):
    fn = SINGLE_DIM[name]
    with pytest.raises(TypeError):
        fn(torch, torch.tensor([[3.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(TypeError, match=f"{name.removeprefix('arg')}.*'dim' must be int"):
        fn(dg, dg.tensor([[3.0, 1.0], [0.0, 2.0]]))


def test_multi_dim_reductions_still_take_a_tuple():
    x = np.arange(6.0).reshape(2, 3)
    assert dg.tensor(x).sum((0, 1)).item() == torch.tensor(x).sum((0, 1)).item()
    assert dg.tensor(x).amax((1,)).tolist() == torch.tensor(x).amax((1,)).tolist()
    assert dg.sort(dg.tensor(x), np.int64(0))[0].tolist() == x.tolist()  # a numpy integer is a dim


# ---- 6. numpy scalars promote as Python numbers ----------------------------------------------------------------------
NP_SCALARS = [np.float64(0.5), np.float32(0.5), np.float16(0.5), np.int64(3), np.int8(3), np.uint8(3)]
NP_TENSORS = {
    "int32": lambda m: m.tensor([1, 2], dtype=m.int32),
    "float16": lambda m: m.tensor([1.0, 2.0], dtype=m.float16),
    "bool": lambda m: m.tensor([True, False]),
    "uint8": lambda m: m.tensor([1, 2], dtype=m.uint8),
}


@pytest.mark.parametrize("tensor", NP_TENSORS)
@pytest.mark.parametrize("scalar", NP_SCALARS, ids=lambda s: type(s).__name__)
def test_numpy_scalars_promote_as_python_numbers(tensor, scalar):
    for fn in (lambda a, s: a + s, lambda a, s: s * a, lambda a, s: a / s):
        d, t = fn(NP_TENSORS[tensor](dg), scalar), fn(NP_TENSORS[tensor](torch), scalar)
        assert d.dtype.name == str(t.dtype).removeprefix("torch.")
        np.testing.assert_allclose(_np(d).astype(np.float64), _np(t).astype(np.float64), rtol=1e-3)


# ---- 7. distgraph errors, not bare builtins ----------------------------------------------------------------------
def test_chunk_of_zero_pieces_raises_a_shape_error_naming_chunk():
    with pytest.raises(RuntimeError, match="greater than 0"):
        torch.ones(3).chunk(0)
    with pytest.raises(errors.ShapeError, match="chunk expects `chunks` to be greater than 0, got: 0"):
        dg.ones(3).chunk(0)


@pytest.mark.parametrize(
    "dst, src, message",
    [
        ((2, 3), (4,), "size of tensor a \\(3\\) must match the size of tensor b \\(4\\) at non-singleton dimension 1"),
        (
            (2, 3),
            (3, 1),
            "size of tensor a \\(2\\) must match the size of tensor b \\(3\\) at non-singleton dimension 0",
        ),
        ((3,), (1, 3), "output with shape \\[3\\] doesn't match the broadcast shape \\[1, 3\\]"),
        ((2, 1), (2, 3), "output with shape \\[2, 1\\] doesn't match the broadcast shape \\[2, 3\\]"),
    ],
)
def test_copy_of_a_source_that_does_not_broadcast_raises_torchs_shape_error(dst, src, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ones(dst).copy_(torch.ones(src))
    with pytest.raises(errors.ShapeError, match="copy_: .*" + message):
        dg.ones(dst).copy_(dg.ones(src))


def test_copy_of_a_broadcastable_source_still_works():
    for lib in (dg, torch):
        x = lib.zeros(2, 3)
        x.copy_(lib.tensor([[1.0], [2.0]]))
        assert x.tolist() == [[1.0] * 3, [2.0] * 3]


# ---- 8. method forms torch has ---------------------------------------------------------------------------------
METHOD_FORMS = {
    "flip-varargs": lambda m, x: x.flip(0, 1),
    "flip-keyword": lambda m, x: x.flip(dims=(1,)),
    "flip-list": lambda m, x: x.flip([0]),
    "permute-keyword": lambda m, x: x.permute(dims=(1, 0)),
    "permute-varargs": lambda m, x: x.permute(1, 0),
    "tile-keyword": lambda m, x: x.tile(dims=(2,)),
    "tile-varargs": lambda m, x: x.tile(2, 1),
    "split-keyword": lambda m, x: m.cat(x.split(split_size=1), 1),
    "split-sizes": lambda m, x: m.cat(x.split([1, 2], dim=1)[::-1], 1),
}


@pytest.mark.parametrize("name", METHOD_FORMS)
def test_method_forms_match_torch(name):
    fn, x = METHOD_FORMS[name], np.arange(6.0).reshape(2, 3)
    (d, [gd]), (t, [gt]) = _both(fn, x, grad=True)
    assert d.tolist() == t.tolist()
    np.testing.assert_array_equal(_np(gd), _np(gt))


SHIFTS = {
    "lshift": lambda m, a: a << 2,
    "rshift": lambda m, a: a >> 1,
    "lshift-tensor": lambda m, a: a << m.tensor([1, 2, 3, 4]),
    "rlshift": lambda m, a: 1 << m.tensor([1, 2, 3, 4]),
    "rrshift": lambda m, a: 256 >> m.tensor([1, 2, 3, 4]),
    "uint8-overflow": lambda m, a: a.to(m.uint8) << 7,
    "ilshift": lambda m, a: a.__ilshift__(3),
    "irshift": lambda m, a: a.__irshift__(m.tensor(1)),
}


@pytest.mark.parametrize("name", SHIFTS)
def test_shift_operators_match_torch(name):
    d, t = SHIFTS[name](dg, dg.tensor([1, -8, 3, 100])), SHIFTS[name](torch, torch.tensor([1, -8, 3, 100]))
    assert d.tolist() == t.tolist() and d.dtype.name == str(t.dtype).removeprefix("torch.")


def test_inplace_shift_writes_into_the_tensor():
    for lib in (dg, torch):
        x = lib.tensor([1, 2])
        y = x
        y <<= 2
        y >>= 1
        assert y is x and x.tolist() == [2, 4]


VIEW_DTYPES = {
    "float32-int32": lambda m, x: x.view(m.int32),
    "keyword": lambda m, x: x.view(dtype=m.int32),
    "float32-int16": lambda m, x: x.view(m.int16),
    "float32-float64": lambda m, x: x[:, :2].contiguous().view(m.float64),
    "float32-uint8": lambda m, x: x.view(m.uint8),
    "same": lambda m, x: x.view(m.float32),
    "0d-same-size": lambda m, x: x[0, 0].view(m.int32),
    "offset-even": lambda m, x: x.reshape(-1)[2:6].view(m.float64),
}


@pytest.mark.parametrize("name", VIEW_DTYPES)
def test_view_dtype_reinterprets_the_memory_as_torch(name):
    fn, x = VIEW_DTYPES[name], np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    d, t = fn(dg, dg.tensor(x, requires_grad=True)), fn(torch, torch.tensor(x, requires_grad=True))
    assert d.dtype.name == str(t.dtype).removeprefix("torch.") and tuple(d.shape) == tuple(t.shape)
    assert d.tolist() == t.tolist() and d.requires_grad is t.requires_grad is False


def test_view_dtype_shares_memory():
    x = dg.zeros(2, dtype=dg.float32)
    x.view(dg.int32)[0] = 1065353216  # the bits of 1.0
    assert x.tolist() == [1.0, 0.0]


VIEW_REFUSED = {
    "size": (lambda m, x: x.view(m.float64), "size\\(-1\\) must be divisible by 2"),
    "stride": (lambda m, x: x.t().view(m.int16), "stride\\(-1\\) must be 1"),
    "0d": (lambda m, x: x[0, 0].view(m.int16), "dim\\(\\) cannot be 0"),
    "offset": (lambda m, x: x.reshape(-1)[1:3].view(m.float64), "storage_offset\\(\\) must be divisible by 2"),
}


@pytest.mark.parametrize("name", VIEW_REFUSED)
def test_view_dtype_refuses_what_torch_refuses(name):
    fn, message = VIEW_REFUSED[name]
    with pytest.raises(RuntimeError, match=message):
        fn(torch, torch.arange(6.0).reshape(2, 3))
    with pytest.raises(errors.ShapeError, match="view: .*" + message):
        fn(dg, dg.arange(6.0).reshape(2, 3))


SCATTER_REDUCE = {
    "add": lambda m, x, i, s: x.scatter(0, i, s, reduce="add"),
    "multiply": lambda m, x, i, s: x.scatter(0, i, s, reduce="multiply"),
    "add-value": lambda m, x, i, s: x.scatter(1, i, 2.5, reduce="add"),
    "multiply-value": lambda m, x, i, s: m.scatter(x, 1, i, 3.0, reduce="multiply"),
    "inplace": lambda m, x, i, s: x.clone().scatter_(0, i, s, reduce="add"),
}


@pytest.mark.parametrize("name", SCATTER_REDUCE)
def test_scatter_reduce_argument_matches_torch(name):
    fn = SCATTER_REDUCE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "The reduce argument of torch.scatter ... is deprecated"
        want = fn(
            torch, torch.full((3, 3), 2.0), torch.tensor([[0, 1, 0], [2, 0, 0]]), torch.arange(1.0, 7).reshape(2, 3)
        )
    got = fn(dg, dg.full((3, 3), 2.0), dg.tensor([[0, 1, 0], [2, 0, 0]]), dg.arange(1.0, 7).reshape(2, 3))
    assert got.tolist() == want.tolist()


def test_scatter_refuses_another_reduce():
    with pytest.raises(errors.ShapeError, match="add or multiply"):
        dg.zeros(3).scatter(0, dg.tensor([0]), dg.ones(1), reduce="max")
