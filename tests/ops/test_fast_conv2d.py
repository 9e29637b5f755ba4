"""conv2d's batched layout (contiguous NCHW output, per-sample columns) and its stride-1 input gradient
(kernel rows gathered into the matmul, contiguous row adds) against torch in float64 and float32."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.ops.conv as conv

torch = pytest.importorskip("torch")
TF = torch.nn.functional
F = dg.nn.functional
rng = np.random.default_rng(0)

CASES = [
    dict(padding=1),
    dict(padding=0),
    dict(padding=(1, 2)),
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(2, 1)),
    dict(dilation=2, padding=2),
    dict(dilation=(1, 2), padding=(1, 2)),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2, dilation=2, padding=1),
    dict(groups=4, dilation=(2, 1), padding=(2, 0)),
]


def _run(x, w, kw, g, lib):
    if lib is torch:
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        y = TF.conv2d(xt, wt, **kw)
        y.backward(torch.tensor(g))
        return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()
    xd, wd = dg.tensor(x, requires_grad=True), dg.tensor(w, requires_grad=True)
    y = F.conv2d(xd, wd, **kw)
    y.backward(dg.tensor(g))
    return y.detach().numpy(), xd.grad.numpy(), wd.grad.numpy()


def _compare(xs, ws, kw, dtype, tol):
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    out = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), **kw)
    g = rng.standard_normal(tuple(out.shape)).astype(dtype)
    for a, b in zip(_run(x, w, kw, g, dg), _run(x, w, kw, g, torch)):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = 1.0 if dtype == np.float64 else max(1.0, float(np.abs(b).max()))  # float32: sums of ~10⁴ terms
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("kw", CASES, ids=[str(k) for k in CASES])
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("batch", [1, 5])
def test_conv2d_and_both_gradients_match_torch_in_float64(kw, kernel, batch):
    _compare((batch, 8, 11, 12), (8, 8 // kw.get("groups", 1), kernel, kernel), kw, np.float64, 1e-12)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1), dict(groups=2, dilation=2, padding=2)])
def test_conv2d_and_both_gradients_match_torch_in_float32_at_batch_32(kw):
    _compare((32, 16, 16, 16), (32, 16 // kw.get("groups", 1), 3, 3), kw, np.float32, 2e-4)


@pytest.mark.parametrize("shape", [((16, 1, 28, 28), (8, 1, 3, 3)), ((16, 8, 14, 14), (16, 8, 3, 3))])
def test_the_small_cnn_shapes_match_torch(shape):
    _compare(*shape, dict(padding=1), np.float64, 1e-12)


def test_the_output_is_contiguous_nchw():
    x, w = rng.standard_normal((3, 4, 9, 9)), rng.standard_normal((6, 4, 3, 3))
    for s, p, d, g in [(1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 2, 2)]:
        y = conv._conv2d.forward(np, x, w[:, : 4 // g], stride=(s, s), padding=(p, p), dilation=(d, d), groups=g)
        assert y.flags.c_contiguous
        y = F.conv2d(dg.tensor(x), dg.tensor(w[:, : 4 // g]), stride=s, padding=p, dilation=d, groups=g)
        assert y.numpy().flags.c_contiguous


@pytest.mark.parametrize(
    "kw",
    [dict(padding=1), dict(stride=2, padding=(1, 2)), dict(dilation=2, padding=1), dict(groups=2, padding=(2, 1))],
)
@pytest.mark.parametrize("budget", [1, 2 * 4 * 9 * 90 * 8])  # one sample per slice; a few
def test_batches_cut_by_the_columns_budget_give_the_same_result(monkeypatch, kw, budget):
    # every slice gathers its columns from the one padded copy of the whole batch
    monkeypatch.setattr(conv, "COLUMNS_BUDGET", budget)
    monkeypatch.setattr(conv, "CACHE_BUDGET", budget)
    _compare((5, 4, 9, 10), (6, 4 // kw.get("groups", 1), 3, 3), kw, np.float64, 1e-12)


def test_gradients_of_a_non_contiguous_incoming_gradient_match_torch():
    x, w = rng.standard_normal((4, 6, 8, 8)), rng.standard_normal((6, 3, 3, 3))
    xd, wd = dg.tensor(x, requires_grad=True), dg.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    # a permuted consumer: the incoming gradient arrives in a transposed layout
    (F.conv2d(xd, wd, padding=1, groups=2).permute(1, 0, 3, 2).tanh() * 3).sum().backward()
    (TF.conv2d(xt, wt, padding=1, groups=2).permute(1, 0, 3, 2).tanh() * 3).sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wd.grad.numpy(), wt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1, groups=2), dict(dilation=2, padding=2)])
def test_double_backward_matches_torch(kw):
    x, w = rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((4, 4 // kw.get("groups", 1), 3, 3))
    xd, wd = dg.tensor(x, requires_grad=True), dg.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    gx, gw = dg.autograd.grad(F.conv2d(xd, wd, **kw).tanh().sum(), [xd, wd], create_graph=True)
    gxt, gwt = torch.autograd.grad(TF.conv2d(xt, wt, **kw).tanh().sum(), [xt, wt], create_graph=True)
    a = dg.autograd.grad((gx**2).sum() + (gw**2).sum(), [xd, wd])
    b = torch.autograd.grad((gxt**2).sum() + (gwt**2).sum(), [xt, wt])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.detach().numpy(), v.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_conv1d_and_an_empty_batch_still_work():
    x, w = rng.standard_normal((3, 4, 10)), rng.standard_normal((5, 4, 3))
    np.testing.assert_allclose(
        F.conv1d(dg.tensor(x), dg.tensor(w), padding=1).numpy(),
        TF.conv1d(torch.tensor(x), torch.tensor(w), padding=1).numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
    _compare((0, 4, 6, 6), (5, 4, 3, 3), dict(padding=1), np.float64, 1e-12)


@pytest.mark.parametrize(
    "kw", [dict(padding=1), dict(groups=2, dilation=(2, 1), padding=(2, 0)), dict(padding=(1, 2), dilation=2)]
)
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 5)])
def test_few_input_channels_take_the_tapwise_input_gradient_and_match_torch(kw, kernel):
    # O > kh·C: the input gradient's channel-major path with one matmul over the batch
    _compare((3, 2, 9, 12), (12, 2 // kw.get("groups", 1), *kernel), kw, np.float64, 1e-12)
    _compare((3, 2, 9, 12), (12, 2 // kw.get("groups", 1), *kernel), kw, np.float32, 1e-5)
