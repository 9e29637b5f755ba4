"""The fused training-mode batch norm (ops/fused_batch_norm.py) and the row scatter-add behind x[ids]'s
backward (ops/row_scatter.py `add_at`) against torch (float64 to 1e-12, float32 to rounding) and, for the
scatter-add, against np.add.at bit for bit."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.ops.registry import get_op
from distgraph.ops.row_scatter import add_at

torch = pytest.importorskip("torch")
TF = torch.nn.functional

_RNG = np.random.default_rng(7)


def _close(a, b, tol):
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b), initial=0.0) <= tol * max(1.0, np.max(np.abs(b), initial=0.0))


def _bn_pair(shape, affine, dtype, running, momentum=0.1):
    c = shape[1]
    x = _RNG.standard_normal(shape) * 3.0 + 1.5
    w, b = _RNG.uniform(0.5, 2.0, c), _RNG.standard_normal(c)
    rm, rv = _RNG.standard_normal(c), _RNG.uniform(0.5, 2.0, c)
    seed = _RNG.standard_normal(shape)
    out = {}
    for lib, mk in ((dg, dg.tensor), (torch, torch.tensor)):
        xs = mk(x.astype(dtype), requires_grad=True)
        ws = mk(w.astype(dtype), requires_grad=True) if affine else None
        bs = mk(b.astype(dtype), requires_grad=True) if affine else None
        rms = mk(rm.astype(dtype)) if running else None
        rvs = mk(rv.astype(dtype)) if running else None
        fn = F.batch_norm if lib is dg else TF.batch_norm
        y = fn(xs, rms, rvs, ws, bs, training=True, momentum=momentum)
        (y * mk(seed.astype(dtype))).sum().backward()
        out[lib] = (y, xs, ws, bs, rms, rvs)
    return out[dg], out[torch]


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (4, 3, 5, 6), (2, 3, 4, 5, 3), (1, 4, 3, 3)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("running", [True, False])
def test_batch_norm_training_matches_torch_float64(shape, affine, running):
    d, t = _bn_pair(shape, affine, np.float64, running, momentum=0.3)
    assert d[0].grad_fn.op.name == "batch_norm_train"
    _close(d[0], t[0], 1e-12)
    _close(d[1].grad, t[1].grad, 1e-12)
    if affine:
        _close(d[2].grad, t[2].grad, 1e-12)
        _close(d[3].grad, t[3].grad, 1e-12)
    if running:  # running_mean with the batch mean, running_var with the unbiased variance
        _close(d[4], t[4], 1e-12)
        _close(d[5], t[5], 1e-12)


def test_batch_norm_training_float32_within_rounding():
    d, t = _bn_pair((32, 8, 6, 6), True, np.float32, True)
    assert d[0].dtype == dg.float32 and d[1].grad.dtype == dg.float32
    for a, b in zip(
        (d[0], d[1].grad, d[2].grad, d[3].grad, d[4], d[5]), (t[0], t[1].grad, t[2].grad, t[3].grad, t[4], t[5])
    ):
        _close(a, b, 2e-5)


def test_batch_norm_momentum_none_is_cumulative_average():
    bn_d, bn_t = dg.nn.BatchNorm2d(3, momentum=None).double(), torch.nn.BatchNorm2d(3, momentum=None).double()
    for _ in range(3):
        x = _RNG.standard_normal((4, 3, 5, 5)) * 2 + 1
        bn_d(dg.tensor(x)), bn_t(torch.tensor(x))
    _close(bn_d.running_mean, bn_t.running_mean, 1e-12)
    _close(bn_d.running_var, bn_t.running_var, 1e-12)
    assert int(bn_d.num_batches_tracked.item()) == 3


def test_batch_norm_no_grad_still_updates_running_stats():
    x = _RNG.standard_normal((6, 4, 3))
    rm_d, rv_d, rm_t, rv_t = (
        dg.zeros(4, dtype=dg.float64),
        dg.ones(4, dtype=dg.float64),
        torch.zeros(4).double(),
        torch.ones(4).double(),
    )
    with dg.no_grad():
        y = F.batch_norm(dg.tensor(x), rm_d, rv_d, training=True)
    yt = TF.batch_norm(torch.tensor(x), rm_t, rv_t, training=True)
    _close(y, yt, 1e-12)
    _close(rm_d, rm_t, 1e-12)
    _close(rv_d, rv_t, 1e-12)


def test_batch_norm_eval_mode_uses_running_stats():
    x, w, b = _RNG.standard_normal((5, 3, 4)), _RNG.standard_normal(3), _RNG.standard_normal(3)
    rm, rv = _RNG.standard_normal(3), _RNG.uniform(0.5, 2.0, 3)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd = F.batch_norm(xd, dg.tensor(rm), dg.tensor(rv), dg.tensor(w), dg.tensor(b), training=False)
    yt = TF.batch_norm(xt, torch.tensor(rm), torch.tensor(rv), torch.tensor(w), torch.tensor(b), training=False)
    yd.sum().backward(), yt.sum().backward()
    _close(yd, yt, 1e-12)
    _close(xd.grad, xt.grad, 1e-12)


def test_batch_norm_double_backward_matches_torch():
    x, w, b = _RNG.standard_normal((4, 3, 5)), _RNG.uniform(0.5, 2.0, 3), _RNG.standard_normal(3)
    seed = _RNG.standard_normal((4, 3, 5))
    res = []
    for lib, mk, fn in ((dg, dg.tensor, F.batch_norm), (torch, torch.tensor, TF.batch_norm)):
        xs, ws, bs = (mk(a, requires_grad=True) for a in (x, w, b))
        y = fn(xs, None, None, ws, bs, training=True)
        gx, gw = lib.autograd.grad((y * mk(seed)).sum(), [xs, ws], create_graph=True)
        ((gx * gx).sum() + (gw * ws).sum()).backward()
        res.append((gx, gw, xs.grad, ws.grad))
    for a, b in zip(*res):
        _close(a, b, 1e-10)


def test_batch_norm_errors_and_fallbacks_kept():
    with pytest.raises(dg.errors.ShapeError):  # one value per channel in training, as torch
        F.batch_norm(dg.tensor(np.ones((1, 3))), None, None, training=True)
    x16 = _RNG.standard_normal((4, 3, 2)).astype(np.float16)  # float16: the composed ops
    y = F.batch_norm(dg.tensor(x16), None, None, training=True)
    assert y.dtype == dg.float16
    _close(y.float(), TF.batch_norm(torch.tensor(x16).float(), None, None, training=True), 5e-3)
    xt = _RNG.standard_normal((4, 3, 5)).transpose(0, 2, 1).copy().transpose(0, 2, 1)  # not contiguous
    _close(
        F.batch_norm(dg.tensor(xt), None, None, training=True),
        TF.batch_norm(torch.tensor(xt), None, None, training=True),
        1e-12,
    )


# ---- x[ids] backward: np.add.at's bits, faster --------------------------------------------------------
@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_add_rows_matches_add_at_bitwise(fresh, dtype):
    for trial in range(60):
        n = int(_RNG.integers(1, [40, 3000][trial % 2]))
        k = int(_RNG.integers(2, 500))
        ishape = [(k,), (k // 2 + 1, 2)][trial % 2]
        idx = _RNG.integers(-n, n, size=ishape)
        rest = [(8,), (4, 3), (16,), (2,)][trial % 4]
        vals = (_RNG.standard_normal(ishape + rest) * 10 ** _RNG.uniform(-3, 3, ishape + rest)).astype(dtype)
        vals = np.where(_RNG.random(vals.shape) < 0.1, -0.0, vals).astype(dtype)  # −0.0: add.at makes +0.0
        base = np.zeros((n, *rest), dtype) if fresh else _RNG.standard_normal((n, *rest)).astype(dtype)
        want, got = base.copy(), base.copy()
        np.add.at(want, idx, vals)
        add_at(np, got, (idx,), vals, fresh=fresh)
        assert want.tobytes() == got.tobytes()
        if fresh:  # x[ids]'s backward op, which adds through add_at
            assert get_op("index_put_add").forward(np, vals, base.shape, (idx,)).tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ids", [np.arange(300) * 7 % 1000, np.array([5, 3, 5, 5, 0, 3, 999, -1, 5] * 20)])
def test_getitem_rows_backward_matches_torch(dtype, ids):
    x = _RNG.standard_normal((1000, 16)).astype(dtype)
    seed = _RNG.standard_normal((len(ids), 16)).astype(dtype)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd, yt = xd[dg.tensor(ids)], xt[torch.tensor(ids)]
    (yd * dg.tensor(seed)).sum().backward()
    (yt * torch.tensor(seed)).sum().backward()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    _close(yd, yt, tol)
    _close(xd.grad, xt.grad, tol)
    ds = dg.index_select(xd, 0, dg.tensor(ids % 1000))
    assert np.array_equal(ds.detach().numpy(), x[ids % 1000])


def test_getitem_rows_of_3d_and_2d_index_backward_matches_torch():
    x = _RNG.standard_normal((50, 4, 3))
    ids = _RNG.integers(0, 50, size=(30, 2))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    seed = _RNG.standard_normal((30, 2, 4, 3))
    (xd[dg.tensor(ids)] * dg.tensor(seed)).sum().backward()
    (xt[torch.tensor(ids)] * torch.tensor(seed)).sum().backward()
    _close(xd.grad, xt.grad, 1e-12)


def test_embedding_backward_with_repeats_matches_torch():
    w = _RNG.standard_normal((20, 8))
    ids = _RNG.integers(0, 20, size=(7, 9))
    wd, wt = dg.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    seed = _RNG.standard_normal((7, 9, 8))
    (F.embedding(dg.tensor(ids), wd) * dg.tensor(seed)).sum().backward()
    (TF.embedding(torch.tensor(ids), wt) * torch.tensor(seed)).sum().backward()
    _close(wd.grad, wt.grad, 1e-12)


def test_index_put_accumulate_matches_torch():
    x = _RNG.standard_normal((30, 10))
    ids = np.array([3, 1, 3, 29, 0, 3, -1, 1] * 4)
    v = _RNG.standard_normal((len(ids), 10))
    want = torch.tensor(x).index_put_((torch.tensor(ids),), torch.tensor(v), accumulate=True)
    got = dg.tensor(x).index_put_((dg.tensor(ids),), dg.tensor(v), accumulate=True)
    _close(got, want, 1e-12)


def test_add_rows_out_of_range_still_raises():
    x = dg.tensor(np.ones((5, 8)), requires_grad=True)
    with pytest.raises(Exception):
        x[dg.tensor(np.array([0, 5]))].sum().backward()


def test_batch_norm_replays_in_a_captured_graph_on_a_new_batch():
    from distgraph.graph.capture import capture
    from distgraph.graph.executor import Runner

    w, b = (
        dg.tensor(_RNG.uniform(0.5, 2.0, 3), requires_grad=True),
        dg.tensor(_RNG.standard_normal(3), requires_grad=True),
    )

    def loss_fn(x):
        y = F.batch_norm(x, None, None, w, b, training=True)
        return (y * y * x).sum()

    graph, params, _ = capture(loss_fn, [dg.tensor(_RNG.standard_normal((4, 3, 5)))], grad_of=[w, b])
    x = dg.tensor(_RNG.standard_normal((4, 3, 5)) * 2)
    outs = Runner(graph)(x.array, *[p.array for p in params])
    loss = loss_fn(x)
    loss.backward()
    assert outs[0] == loss.item()
    for g, p in zip(outs[1:], (w, b)):
        np.testing.assert_array_equal(g, p.grad.numpy())
