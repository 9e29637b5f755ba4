"""ops/namespace_extra.py against torch: the differentiable functions (atleast_Nd, meshgrid, cartesian_prod,
combinations, block_diag, column_stack/dstack/row_stack, cdist/pdist, trapezoid and cumulative_trapezoid,
vander, rsub) in float64 forward + gradient + gradcheck; the integer-valued ones (tril/triu_indices,
unravel_index, bucketize, isin) and the dtype questions (broadcast_shapes, result_type, can_cast, finfo,
iinfo) by value and dtype; bad input raises an error naming the op."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from tests.ops._table import Table, run_gradcheck, run_parity

torch = pytest.importorskip("torch")

INF = float("inf")
T = Table()
T.op("atleast_1d-0d", lambda m, a: m.atleast_1d(a.sum()), (2,))
T.op("atleast_1d-many", lambda m, a, b: m.atleast_1d(a.sum(), b), (3,), (2, 2))
T.op("atleast_1d-list", lambda m, a: m.atleast_1d([a]), (3,))
T.op("atleast_2d-1d", lambda m, a: m.atleast_2d(a), (3,))
T.op("atleast_2d-0d", lambda m, a: m.atleast_2d(a.sum()), (3,))
T.op("atleast_3d-1d", lambda m, a: m.atleast_3d(a), (3,))
T.op("atleast_3d-2d-and-0d", lambda m, a, b: m.atleast_3d(a, b.sum()), (2, 3), (2,))
T.op("atleast_3d-4d", lambda m, a: m.atleast_3d(a), (1, 2, 1, 2))
T.op("meshgrid-ij", lambda m, a, b, c: m.meshgrid(a, b, c, indexing="ij"), (2,), (3,), (4,))
T.op("meshgrid-xy", lambda m, a, b, c: m.meshgrid(a, b, c, indexing="xy"), (2,), (3,), (4,))
T.op("meshgrid-xy-list-0d", lambda m, a, b: m.meshgrid([a.sum(), b], indexing="xy"), (2,), (3,))
T.op("meshgrid-one", lambda m, a: m.meshgrid(a, indexing="xy"), (3,))
T.op("cartesian_prod", lambda m, a, b: m.cartesian_prod(a, b), (2,), (3,))
T.op("cartesian_prod-three", lambda m, a, b, c: m.cartesian_prod(a, b, c), (2,), (3,), (2,))
T.op("cartesian_prod-one", lambda m, a: m.cartesian_prod(a) * 1, (3,))
T.op("combinations", lambda m, a: m.combinations(a), (4,))
T.op("combinations-r3", lambda m, a: m.combinations(a, r=3), (5,))
T.op("combinations-replacement", lambda m, a: m.combinations(a, 2, with_replacement=True), (3,))
T.op("combinations-r-too-big", lambda m, a: m.combinations(a, r=4), (3,), gradcheck=False)
T.op("block_diag", lambda m, a, b, c: m.block_diag(a, b.sum(), c), (2, 3), (2,), (3,))
T.op("block_diag-one", lambda m, a: m.block_diag(a), (2, 2))
T.op("block_diag-empty-rows", lambda m, a, b: m.block_diag(a, b), (0, 2), (2, 1), gradcheck=False)
T.op("column_stack", lambda m, a, b, c: m.column_stack([a, b, c]), (3,), (3, 2), (3,))
T.op("column_stack-0d", lambda m, a: m.column_stack([a.sum(), a[:1]]), (2,))
T.op("dstack", lambda m, a, b: m.dstack((a, b)), (2, 3), (2, 3, 2))
T.op("dstack-1d", lambda m, a, b: m.dstack([a, b]), (3,), (3,))
T.op("row_stack", lambda m, a, b: m.row_stack([a, b]), (3,), (2, 3))
T.op("concatenate", lambda m, a, b: m.concatenate([a, b], dim=1), (2, 3), (2, 1))
for _p in (0, 0.5, 1, 2, 3, INF):
    T.op(f"cdist-p{_p}", lambda m, a, b, p=_p: m.cdist(a, b, p=p), (4, 3), (5, 3), gradcheck=_p not in (0,))
    T.op(f"pdist-p{_p}", lambda m, a, p=_p: m.pdist(a, p=p), (5, 3), gradcheck=_p not in (0,))
T.op("cdist-batched-broadcast", lambda m, a, b: m.cdist(a, b), (2, 1, 4, 3), (3, 5, 3))
T.op("cdist-compute-mode", lambda m, a, b: m.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist"), (2, 3), (3, 3))
T.op("cdist-no-columns", lambda m, a, b: m.cdist(a, b), (2, 0), (3, 0), gradcheck=False)
T.op("pdist-one-row", lambda m, a: m.pdist(a), (1, 3), gradcheck=False)
T.op("trapezoid", lambda m, y: m.trapezoid(y), (3, 5))
T.op("trapezoid-dx-dim", lambda m, y: m.trapezoid(y, dx=0.5, dim=0), (3, 5))
T.op("trapezoid-x-1d", lambda m, y, x: m.trapezoid(y, x, dim=0), (3, 5), (3,))
T.op("trapezoid-x-full", lambda m, y, x: m.trapezoid(y, x), (3, 5), (3, 5))
T.op("trapezoid-x-broadcast", lambda m, y, x: m.trapezoid(y, x, dim=1), (2, 3, 4), (3, 4))
T.op("trapezoid-one-sample", lambda m, y: m.trapezoid(y), (3, 1))
T.op("trapz-x", lambda m, y, x: m.trapz(y, x), (2, 4), (4,))
T.op("trapz-dx", lambda m, y: m.trapz(y, dx=2.0, dim=0), (3, 2))
T.op("cumulative_trapezoid", lambda m, y: m.cumulative_trapezoid(y), (3, 5))
T.op("cumulative_trapezoid-x", lambda m, y, x: m.cumulative_trapezoid(y, x, dim=0), (4, 2), (4,))
T.op("cumulative_trapezoid-dx", lambda m, y: m.cumulative_trapezoid(y, dx=3.0), (4,))
# torch 2.13's vander cannot backward (its cumprod output is flipped in place): forward here, gradient below
T.op("vander", lambda m, x: m.vander(x), (4,), grad=False)
T.op("vander-N-increasing", lambda m, x: m.vander(x, N=3, increasing=True), (4,), grad=False)
T.op("vander-N1", lambda m, x: m.vander(x, N=1), (3,))
T.op("vander-N2", lambda m, x: m.vander(x, N=2), (3,), grad=False)
T.op("vander-N0", lambda m, x: m.vander(x, N=0), (3,), gradcheck=False)
T.op("rsub", lambda m, a, b: m.rsub(a, b), (2, 3), (3,))
T.op("rsub-alpha", lambda m, a, b: m.rsub(a, b, alpha=2.5), (2, 3), (2, 3))
T.op("rsub-scalar", lambda m, a: m.rsub(a, 3.0, alpha=2), (2, 3))


@pytest.mark.parametrize("row", T.rows())
def test_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", T.gradcheck_rows())
def test_gradcheck(row):
    run_gradcheck(row)


def _same(d, t):
    """A distgraph result equals torch's: values, shape and dtype (tuples element by element)."""
    if isinstance(t, tuple):
        assert isinstance(d, tuple) and len(d) == len(t)
        for a, b in zip(d, t):
            _same(a, b)
        return
    assert tuple(d.shape) == tuple(t.shape)
    assert d.dtype.name == str(t.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(d.numpy(), t.numpy())


def _both(fn, *arrays):
    _same(fn(dg, *(dg.tensor(a) for a in arrays)), fn(torch, *(torch.tensor(a) for a in arrays)))


def test_zero_distance_has_zero_gradient_as_torch():
    """cdist/pdist at coincident rows: torch's gradient there is 0 (not NaN from 0/0)."""
    a = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    for p in (0.5, 1, 2, 3, INF):
        _check_grad(lambda m, x, p=p: m.pdist(x, p), a)
        _check_grad(lambda m, x, p=p: m.cdist(x, x, p), a)


def _check_grad(fn, a):
    x, t = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    fn(dg, x).sum().backward()
    fn(torch, t).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("increasing", [False, True])
def test_vander_gradient(increasing):
    """The gradient of sum(w * vander(x)) is sum_k k w_k x**(k-1), finite at x = 0 (torch can't backward
    its own vander here, so the reference is the formula) and by central differences."""
    x = dg.tensor([0.0, 1.5, -2.0], dtype=dg.float64, requires_grad=True)
    w = np.random.default_rng(0).standard_normal((3, 4))
    (dg.vander(x, N=4, increasing=increasing) * dg.tensor(w)).sum().backward()
    k = np.arange(4) if increasing else np.arange(3, -1, -1)
    xs = x.detach().numpy()[:, None]
    want = (w * k * np.where(k > 0, xs ** np.maximum(k - 1, 0), 0.0)).sum(1)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-12)
    assert dg.autograd.gradcheck(
        lambda t: dg.vander(t, N=4, increasing=increasing), [dg.tensor(xs[:, 0], requires_grad=True)]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.bool_])
def test_dtypes_follow_torch(dtype):
    a = (np.arange(6).reshape(2, 3) % 3).astype(dtype)
    _both(lambda m, x: m.atleast_3d(x), a)
    _both(lambda m, x: m.block_diag(x, x[0]), a)
    _both(lambda m, x: m.column_stack([x, x]), a)
    _both(lambda m, x: m.dstack([x, x]), a)
    _both(lambda m, x: m.meshgrid(x[0], x[1], indexing="xy"), a)
    _both(lambda m, x: m.cartesian_prod(x[0], x[1]), a)
    _both(lambda m, x: m.combinations(x[0], 2), a)
    if dtype != np.bool_:
        _both(lambda m, x: m.vander(x[0], 4), a)
        _both(lambda m, x: m.trapezoid(x), a)
        _both(lambda m, x: m.cumulative_trapezoid(x, dim=0), a)
        _both(lambda m, x: m.rsub(x, 3, alpha=2), a)


def test_block_diag_promotes_mixed_dtypes():
    _both(lambda m, a, b: m.block_diag(a, b), np.array([1, 2], np.int32), np.array([[0.5]], np.float32))


def test_float32_forward_matches_torch():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    for fn in (lambda m, x, y: m.cdist(x, y), lambda m, x, y: m.pdist(x, 1), lambda m, x, y: m.trapezoid(x, dim=0)):
        d, t = fn(dg, dg.tensor(a), dg.tensor(b)), fn(torch, torch.tensor(a), torch.tensor(b))
        assert d.dtype == dg.float32
        np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("row", "col", "offset"), [(3, 4, 0), (4, 3, -1), (3, 3, 1), (0, 3, 0), (3, 5, 7), (4, 2, -5)])
def test_tril_triu_indices(row, col, offset):
    for name in ("tril_indices", "triu_indices"):
        _same(getattr(dg, name)(row, col, offset), getattr(torch, name)(row, col, offset))
    _same(dg.tril_indices(row, col, offset, dtype=dg.int32), torch.tril_indices(row, col, offset, dtype=torch.int32))


def test_unravel_index_wraps_as_torch():
    for idx, shape in (([5, 7, 0], (2, 3)), ([-1, -7, 6], (2, 3)), (4, (2, 3)), ([[1, 2], [3, 4]], (5,)), (4, 6)):
        _same(dg.unravel_index(dg.tensor(idx), shape), torch.unravel_index(torch.tensor(idx), shape))


@pytest.mark.parametrize("right", [False, True])
def test_bucketize(right):
    bounds = np.array([1.0, 3.0, 5.0, 7.0])
    vals = np.array([[0.0, 1.0, 3.0], [4.0, 7.0, 9.0]])
    _both(lambda m, v, b: m.bucketize(v, b, right=right), vals, bounds)
    _both(lambda m, v, b: m.bucketize(v, b, right=right, out_int32=True), vals, bounds)
    _same(dg.bucketize(3, dg.tensor(bounds), right=right), torch.bucketize(3, torch.tensor(bounds), right=right))


@pytest.mark.parametrize("invert", [False, True])
def test_isin(invert):
    a, b = np.array([[1, 2, 3], [4, 5, 2]]), np.array([2, 4, 9])
    _both(lambda m, x, y: m.isin(x, y, invert=invert), a, b)
    _both(lambda m, x, y: m.isin(x, y, assume_unique=True, invert=invert), np.array([1, 2, 3]), b)
    _both(lambda m, x, y: m.isin(x, y, invert=invert), a.astype(np.float64), b)
    _same(dg.isin(dg.tensor(a), 2, invert=invert), torch.isin(torch.tensor(a), 2, invert=invert))
    _same(dg.isin(2, dg.tensor(b), invert=invert), torch.isin(2, torch.tensor(b), invert=invert))


def test_broadcast_shapes():
    for shapes in (((2, 1), (3,)), ((1,), ()), (2, (3, 1)), ((5, 1, 4), (3, 1), (1,))):
        assert dg.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    with pytest.raises(ShapeError, match="broadcast_shapes"):
        dg.broadcast_shapes((2, 1), (3, 3))


def test_result_type_and_can_cast():
    pairs = [(dg.tensor([1]), 1.0), (dg.tensor([1], dtype=dg.int8), dg.tensor(1)), (2, 3.0), (True, dg.tensor([1]))]
    for a, b in pairs:
        ta, tb = (torch.tensor(x.numpy()) if isinstance(x, dg.Tensor) else x for x in (a, b))
        assert dg.result_type(a, b).name == str(torch.result_type(ta, tb)).removeprefix("torch.")
    names = ["bool", "uint8", "int8", "int32", "int64", "float16", "float32", "float64"]
    for f in names:
        for t in names:
            assert dg.can_cast(
                getattr(dg, f if f != "bool" else "bool_"), getattr(dg, t if t != "bool" else "bool_")
            ) == (torch.can_cast(getattr(torch, f), getattr(torch, t))), (f, t)


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_finfo_fields_match_torch(name):
    d, t = dg.finfo(getattr(dg, name)), torch.finfo(getattr(torch, name))
    for field in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype"):
        assert getattr(d, field) == getattr(t, field), field
    assert dg.finfo().dtype == torch.finfo().dtype


@pytest.mark.parametrize("name", ["uint8", "int8", "int16", "int32", "int64"])
def test_iinfo_fields_match_torch(name):
    d, t = dg.iinfo(getattr(dg, name)), torch.iinfo(getattr(torch, name))
    for field in ("bits", "max", "min", "dtype"):
        assert getattr(d, field) == getattr(t, field), field


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dg.meshgrid(dg.ones(2, 2)), ShapeError, "meshgrid.*0D or 1D"),
        (lambda: dg.meshgrid(dg.ones(2), dg.ones(2, dtype=dg.int64)), DTypeError, "meshgrid.*same dtype"),
        (lambda: dg.meshgrid(dg.ones(2), indexing="ji"), ShapeError, "meshgrid.*indexing"),
        (lambda: dg.cartesian_prod(dg.ones(2, 2)), ShapeError, "cartesian_prod.*1D"),
        (lambda: dg.combinations(dg.ones(2, 2)), ShapeError, "combinations.*1D"),
        (lambda: dg.combinations(dg.ones(2), r=-1), ShapeError, "combinations.*non-negative"),
        (lambda: dg.block_diag(dg.ones(2, 2, 2)), ShapeError, "block_diag.*2 or fewer"),
        (lambda: dg.cdist(dg.ones(3), dg.ones(2, 3)), ShapeError, "cdist.*2D"),
        (lambda: dg.cdist(dg.ones(2, 3), dg.ones(2, 4)), ShapeError, "cdist.*columns"),
        (lambda: dg.cdist(dg.ones(2, 3), dg.ones(2, 3), p=-1), ShapeError, "cdist.*non-negative"),
        (lambda: dg.cdist(dg.ones(2, 3), dg.ones(2, 3), compute_mode="x"), ShapeError, "cdist.*compute_mode"),
        (lambda: dg.cdist(dg.ones(2, 3, dtype=dg.int64), dg.ones(2, 3)), DTypeError, "cdist.*floating"),
        (lambda: dg.pdist(dg.ones(3)), ShapeError, "pdist.*2D"),
        (lambda: dg.trapezoid(dg.ones(3), dg.ones(2)), ShapeError, "trapezoid.*each sample"),
        (lambda: dg.trapezoid(dg.ones(3), dg.ones(3), dx=1.0), ShapeError, "trapezoid.*both"),
        (lambda: dg.vander(dg.ones(2, 2)), ShapeError, "vander.*one-dimensional"),
        (lambda: dg.rsub(dg.tensor([True]), 3), DTypeError, "[Ss]ubtraction"),
        (lambda: dg.tril_indices(-1, 3), ShapeError, "tril_indices.*non-negative"),
        (lambda: dg.triu_indices(2, 3, dtype=dg.float32), DTypeError, "triu_indices.*integer"),
        (lambda: dg.unravel_index(dg.tensor([1.0]), (2, 3)), DTypeError, "unravel_index.*integer"),
        (lambda: dg.unravel_index(dg.tensor([1]), (2, -3)), ShapeError, "unravel_index.*negative"),
        (lambda: dg.bucketize(dg.ones(2), dg.ones(2, 2)), ShapeError, "bucketize.*1 dimension"),
        (lambda: dg.finfo(dg.int32), DTypeError, "finfo.*floating"),
        (lambda: dg.iinfo(dg.float32), DTypeError, "iinfo.*integer"),
        (lambda: dg.atleast_1d(1.0), DTypeError, "atleast_1d.*Tensor"),
    ],
)
def test_bad_input_names_the_op(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _consts(m, n):
    """Fixed weights without grad (torch's bce weight and pos_weight are not differentiable)."""
    return m.tensor(np.linspace(0.5, 2.0, n), dtype=m.float64)


# ---- torch's top-level functional forms (nn/functional/torch_forms.py), with ATen's signatures --------
F = Table()
F.op("conv1d", lambda m, x, w: m.conv1d(x, w, None, 1, 1), (2, 3, 6), (4, 3, 3))
F.op("conv2d", lambda m, x, w, b: m.conv2d(x, w, b, 2), (1, 2, 5, 5), (3, 2, 2, 2), (3,))
F.op("conv_transpose1d", lambda m, x, w: m.conv_transpose1d(x, w, None, 2), (2, 3, 4), (3, 2, 3))
F.op("conv_transpose2d", lambda m, x, w: m.conv_transpose2d(x, w), (1, 2, 3, 3), (2, 3, 2, 2))
F.op("max_pool1d", lambda m, x: m.max_pool1d(x, 2), (2, 3, 7))
F.op("max_pool1d-stride", lambda m, x: m.max_pool1d(x, 3, 2, 1, 1, True), (2, 3, 8))
F.op("max_pool2d", lambda m, x: m.max_pool2d(x, [2, 2], [], 0, 1, False), (1, 2, 5, 5))
F.op("max_pool1d_with_indices", lambda m, x: m.max_pool1d_with_indices(x, 2)[0], (2, 3, 6))
F.op("adaptive_max_pool1d", lambda m, x: m.adaptive_max_pool1d(x, 3)[0], (2, 3, 7))
F.op("avg_pool1d", lambda m, x: m.avg_pool1d(x, 3, 2, 1), (2, 3, 7))
F.op("adaptive_avg_pool1d", lambda m, x: m.adaptive_avg_pool1d(x, 4), (2, 3, 7))
F.op("pixel_shuffle", lambda m, x: m.pixel_shuffle(x, 2), (1, 8, 2, 3))
F.op("pixel_unshuffle", lambda m, x: m.pixel_unshuffle(x, 2), (1, 2, 4, 6))
F.op("channel_shuffle", lambda m, x: m.channel_shuffle(x, 2), (1, 4, 2, 2), gradcheck=False)
F.op("cosine_similarity", lambda m, a, b: m.cosine_similarity(a, b, 0), (3, 4), (3, 4))
F.op("pairwise_distance", lambda m, a, b: m.pairwise_distance(a, b, 3.0, 1e-6, True), (3, 4), (3, 4))
F.op("bilinear", lambda m, a, b, w, c: m.bilinear(a, b, w, c), (2, 3), (2, 4), (5, 3, 4), (5,))
F.op("layer_norm", lambda m, x, w, b: m.layer_norm(x, [4], w, b, 1e-5, False), (2, 3, 4), (4,), (4,))
F.op("group_norm", lambda m, x, w: m.group_norm(x, 2, w, None, 1e-5, True), (2, 4, 3), (4,))
F.op(
    "batch_norm-train", lambda m, x, w, b: m.batch_norm(x, w, b, None, None, True, 0.1, 1e-5, False), (4, 3), (3,), (3,)
)
F.op("instance_norm", lambda m, x: m.instance_norm(x, None, None, None, None, True, 0.1, 1e-5, False), (2, 3, 5))
F.op("rms_norm", lambda m, x, w: m.rms_norm(x, [4], w, 1e-6), (2, 3, 4), (4,))
F.op("embedding", lambda m, w: m.embedding(w, m.tensor([[0, 2], [4, 2]])), (5, 3))
# a padding row gets no gradient on purpose, so central differences do not check those rows
F.op("embedding-padding", lambda m, w: m.embedding(w, m.tensor([0, 2, 4, 2]), 2), (5, 3), gradcheck=False)
F.op("embedding-padding-negative-is-none", lambda m, w: m.embedding(w, m.tensor([0, 3, 1]), -2), (5, 3))
F.op("selu", lambda m, x: m.selu(x), (3, 4))
F.op("celu", lambda m, x: m.celu(x, 0.5), (3, 4))
F.op("threshold", lambda m, x: m.threshold(x, 0.1, -2.0), (3, 4))
F.op("hardshrink", lambda m, x: m.hardshrink(x, 0.3), (3, 4))
F.op("prelu", lambda m, x, w: m.prelu(x, w), (2, 3, 4), (3,))
F.op("rrelu-eval", lambda m, x: m.rrelu(x, 0.1, 0.3, False), (3, 4))
F.op("dropout-eval", lambda m, x: m.dropout(x, 0.5, False), (3, 4))
F.op("alpha_dropout-eval", lambda m, x: m.alpha_dropout(x, 0.5, False), (3, 4))
for _r in (0, 1, 2):
    F.op(f"kl_div-r{_r}", lambda m, a, b, r=_r: m.kl_div(a, b.exp(), r), (3, 4), (3, 4))
    F.op(f"kl_div-log-target-r{_r}", lambda m, a, b, r=_r: m.kl_div(a, b, r, log_target=True), (3, 4), (3, 4))
    F.op(
        f"poisson_nll_loss-r{_r}",
        lambda m, a, b, r=_r: m.poisson_nll_loss(a, b.abs(), True, True, 1e-8, r),
        (3, 4),
        (3, 4),
    )
    F.op(
        f"margin_ranking_loss-r{_r}",
        lambda m, a, b, r=_r: m.margin_ranking_loss(a, b, m.tensor([1.0, -1.0, 1.0], dtype=m.float64), 0.2, r),
        (3,),
        (3,),
    )
    F.op(
        f"hinge_embedding_loss-r{_r}",
        lambda m, a, r=_r: m.hinge_embedding_loss(a, m.tensor([1.0, -1.0, 1.0], dtype=m.float64), 0.5, r),
        (3,),
    )
    F.op(
        f"cosine_embedding_loss-r{_r}",
        lambda m, a, b, r=_r: m.cosine_embedding_loss(a, b, m.tensor([1.0, -1.0, 1.0], dtype=m.float64), 0.1, r),
        (3, 4),
        (3, 4),
    )
    F.op(
        f"triplet_margin_loss-r{_r}",
        lambda m, a, b, c, r=_r: m.triplet_margin_loss(a, b, c, 1.0, 2.0, 1e-6, True, r),
        (3, 4),
        (3, 4),
        (3, 4),
    )
    F.op(
        f"bce_with_logits-r{_r}",
        lambda m, a, b, r=_r: m.binary_cross_entropy_with_logits(a, b.sigmoid(), _consts(m, 4), _consts(m, 4) + 1, r),
        (3, 4),
        (3, 4),
    )


@pytest.mark.parametrize("row", F.rows())
def test_torch_form_matches_torch(row, device):
    run_parity(row, device)


@pytest.mark.parametrize("row", F.gradcheck_rows())
def test_torch_form_gradcheck(row):
    run_gradcheck(row)


def test_torch_forms_with_indices_return_both():
    x = np.random.default_rng(0).standard_normal((2, 3, 7))
    _same(dg.max_pool1d_with_indices(dg.tensor(x), 3, 2), torch.max_pool1d_with_indices(torch.tensor(x), 3, 2))
    _same(dg.adaptive_max_pool1d(dg.tensor(x), 3), torch.adaptive_max_pool1d(torch.tensor(x), 3))


def test_torch_form_dropout_train_is_required_and_drops():
    x = dg.ones(1000, dtype=dg.float64)
    with pytest.raises(TypeError):
        dg.dropout(x, 0.5)
    y = dg.dropout(x, 0.25, True).numpy()
    assert set(np.unique(y)) <= {0.0, 1 / 0.75} and 0.15 < (y == 0).mean() < 0.35
    z = dg.ones(1000, dtype=dg.float64)
    assert dg.dropout_(z, 0.25, True) is z and 0.15 < (z.numpy() == 0).mean() < 0.35
    a = dg.ones(1000, dtype=dg.float64)
    assert dg.alpha_dropout_(a, 0.5, True) is a and len(np.unique(a.numpy())) == 2


def test_torch_form_inplace_activations():
    x = np.linspace(-2, 2, 9)
    for name, args in (("selu_", ()), ("celu_", (0.5,)), ("threshold_", (0.5, -1.0))):
        d, t = dg.tensor(x), torch.tensor(x)
        assert getattr(dg, name)(d, *args) is d
        getattr(torch, name)(t, *args)
        np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-12)


def test_torch_form_losses_take_int_reductions_only():
    a = dg.ones(3)
    with pytest.raises(DTypeError, match="kl_div: reduction must be 0"):
        dg.kl_div(a, a, "mean")
    with pytest.raises(DTypeError, match="margin_ranking_loss: reduction"):
        dg.margin_ranking_loss(a, a, a, 0.0, 3)


def test_torch_form_kl_div_mean_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dg.kl_div(dg.ones(3), dg.ones(3), 1)


def test_torch_form_embedding_refuses_swapped_arguments():
    with pytest.raises(DTypeError, match="embedding.*weight, indices"):
        dg.embedding([0, 1], dg.ones(3, 2))


# ---- random_extra: normal/poisson/binomial/randint_like, rng state, threads, windows ----------------------
WINDOWS = ["hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window"]


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 8])
@pytest.mark.parametrize("periodic", [True, False])
def test_windows_match_torch(name, n, periodic):
    d = getattr(dg, name)(n, periodic, dtype=dg.float64)
    t = getattr(torch, name)(n, periodic, dtype=torch.float64)
    assert tuple(d.shape) == tuple(t.shape)
    np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-12, atol=1e-14)
    d32, t32 = getattr(dg, name)(n), getattr(torch, name)(n)
    assert d32.dtype == dg.float32
    np.testing.assert_allclose(d32.numpy(), t32.numpy(), rtol=1e-6, atol=1e-7)


def test_window_parameters_match_torch():
    np.testing.assert_allclose(
        dg.hamming_window(7, False, 0.5, 0.5).numpy(), torch.hamming_window(7, False, 0.5, 0.5), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(dg.kaiser_window(6, True, 5.0).numpy(), torch.kaiser_window(6, True, 5.0), rtol=1e-6)
    with pytest.raises(ShapeError, match="hann_window.*non-negative"):
        dg.hann_window(-1)
    with pytest.raises(DTypeError, match="bartlett_window.*floating"):
        dg.bartlett_window(4, dtype=dg.int64)


def test_rng_state_round_trip_replays_draws():
    dg.manual_seed(3)
    state = dg.get_rng_state()
    assert state.dtype == dg.uint8 and state.ndim == 1
    a = (dg.randn(4).numpy(), dg.normal(dg.zeros(3), 1.0).numpy(), dg.poisson(dg.ones(3) * 4).numpy())
    dg.manual_seed(99)
    dg.set_rng_state(state)
    b = (dg.randn(4).numpy(), dg.normal(dg.zeros(3), 1.0).numpy(), dg.poisson(dg.ones(3) * 4).numpy())
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert dg.initial_seed() == 3
    with pytest.raises(InputRangeError, match="set_rng_state"):
        dg.set_rng_state(dg.tensor([1, 2, 3], dtype=dg.uint8))
    with pytest.raises(DTypeError, match="set_rng_state.*uint8"):
        dg.set_rng_state(dg.ones(3))


def test_seed_reseeds_and_is_reported():
    s = dg.seed()
    assert dg.initial_seed() == s and 0 <= s < 2**64
    a = dg.rand(3).numpy()
    dg.manual_seed(s)
    np.testing.assert_array_equal(dg.rand(3).numpy(), a)


def test_normal_overloads_shapes_dtypes_and_zero_gradient_as_torch():
    mean = np.zeros((2, 3))
    std = np.full(3, 2.0)
    for args in ((mean, std), (mean, 1.5), (0.5, std)):
        d_args = [dg.tensor(a, requires_grad=True) if isinstance(a, np.ndarray) else a for a in args]
        t_args = [torch.tensor(a, requires_grad=True) if isinstance(a, np.ndarray) else a for a in args]
        d, t = dg.normal(*d_args), torch.normal(*t_args)
        assert tuple(d.shape) == tuple(t.shape) and d.dtype == dg.float64 and d.requires_grad == t.requires_grad
        d.sum().backward()
        t.sum().backward()
        for x, y in zip(d_args, t_args):
            if isinstance(x, dg.Tensor):
                np.testing.assert_array_equal(x.grad.numpy(), y.grad.numpy())
    d, t = dg.normal(2.0, 3.0, (4, 2)), torch.normal(2.0, 3.0, (4, 2))
    assert tuple(d.shape) == tuple(t.shape) and d.dtype == dg.float32
    assert dg.normal(0.0, 1.0, (2,), dtype=dg.float64).dtype == dg.float64


def test_draws_have_the_right_distribution():
    dg.manual_seed(0)
    x = dg.normal(dg.full((20000,), 3.0, dtype=dg.float64), 2.0).numpy()
    assert abs(x.mean() - 3) < 0.05 and abs(x.std() - 2) < 0.05
    p = dg.poisson(dg.full((20000,), 4.0, dtype=dg.float64)).numpy()
    assert abs(p.mean() - 4) < 0.1 and np.all(p == np.round(p))
    b = dg.binomial(dg.full((20000,), 10.0), dg.full((20000,), 0.3)).numpy()
    assert b.dtype == np.float32 and abs(b.mean() - 3) < 0.05 and b.min() >= 0 and b.max() <= 10
    r = dg.randint_like(dg.zeros(20000, dtype=dg.int32), 2, 5)
    assert r.dtype == dg.int32 and set(np.unique(r.numpy())) == {2, 3, 4}
    assert dg.randint_like(dg.zeros(3, dtype=dg.float64), 5).dtype == dg.float64


def test_random_draws_are_not_frozen_by_graph_passes():
    from distgraph.ops.registry import get_op

    assert all(get_op(n).random for n in ("normal_sample", "poisson_sample", "binomial_sample"))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dg.normal(dg.zeros(2), -dg.ones(2)), InputRangeError, "normal.*std >= 0"),
        (lambda: dg.normal(0.0, -1.0, (2,)), InputRangeError, "normal.*std >= 0"),
        (lambda: dg.normal(0.0, 1.0), ShapeError, "normal.*size"),
        (lambda: dg.normal(dg.zeros(2, dtype=dg.int64), 1.0), DTypeError, "normal.*floating"),
        (lambda: dg.poisson(-dg.ones(2)), InputRangeError, "poisson.*non-negative"),
        (lambda: dg.binomial(dg.ones(2), dg.ones(3)), ShapeError, "binomial.*same shape"),
        (lambda: dg.binomial(dg.ones(2), dg.ones(2) * 2), InputRangeError, "binomial.*prob"),
        (lambda: dg.randint_like(dg.zeros(2), 3, 3), InputRangeError, "randint_like.*low < high"),
        (lambda: dg.set_num_threads(0), InputRangeError, "set_num_threads.*positive"),
    ],
)
def test_random_bad_input_names_the_op(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_num_threads_round_trip():
    pytest.importorskip("threadpoolctl")
    before = dg.get_num_threads()
    dg.set_num_threads(1)
    assert dg.get_num_threads() == 1
    dg.set_num_threads(before)
    assert dg.get_num_threads() == before


def test_inf_distance_with_an_infinite_difference_is_inf_as_torch():
    """p=inf over differences holding inf: torch gives inf (a detached-difference trick gave inf - inf = NaN).
    (With a NaN torch's cdist and pdist disagree with each other, so none is used here.)"""
    x = np.array([[0.0, np.inf, 1.0], [0.0, 0.0, 0.0], [1.0, -np.inf, 2.0]])
    for fn in (lambda m, a: m.pdist(a, INF), lambda m, a: m.cdist(a[:1], a[1:], INF)):
        d, t = fn(dg, dg.tensor(x)), fn(torch, torch.tensor(x))
        np.testing.assert_array_equal(d.numpy(), t.numpy())
