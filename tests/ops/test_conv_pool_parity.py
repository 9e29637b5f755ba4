"""conv1d/conv2d and pooling against torch in float64 (values and gradients), gradcheck and double
backward on small cases, and the layers with copied weights."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
F = dg.nn.functional
rng = np.random.default_rng(0)

CONV2D = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(padding=(2, 1), stride=(2, 1)),
    dict(dilation=2, padding=2),
    dict(groups=2),
    dict(groups=4, stride=2, padding=1),
    dict(padding="same"),
    dict(padding="valid", dilation=(1, 2)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own notice
@pytest.mark.parametrize("kernel,dilation", [((2, 3), 1), ((4, 4), 1), ((3, 2), (2, 1)), ((2, 2), (1, 3))])
def test_conv2d_same_padding_with_even_kernels_matches_torch(kernel, dilation):
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3) + kernel)
    check(lambda a, b: F.conv2d(a, b, padding="same", dilation=dilation),
          lambda a, b: TF.conv2d(a, b, padding="same", dilation=dilation), x, w)  # fmt: skip


@pytest.mark.parametrize("kw", CONV2D, ids=[str(k) for k in CONV2D])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch(kw, bias, device):
    g = kw.get("groups", 1)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((4, 4 // g, 3, 3))
    b = rng.standard_normal(4) if bias else None
    args = (x, w) + ((b,) if bias else ())
    check(lambda *a: F.conv2d(*a[:2], a[2] if bias else None, **kw), lambda *a: TF.conv2d(*a[:2], a[2] if bias else None, **kw),
          *args, device=device)  # fmt: skip


@pytest.mark.parametrize("width", [5, 15, 16, 40])  # input grad: padded-row scatter below 16 output columns
def test_conv2d_input_grad_on_narrow_and_wide_rows(width):
    x, w = rng.standard_normal((2, 3, 4, width)), rng.standard_normal((4, 3, 3, 2))
    check(lambda a, b: F.conv2d(a, b, padding=(1, 2), dilation=(1, 2)),
          lambda a, b: TF.conv2d(a, b, padding=(1, 2), dilation=(1, 2)), x, w)  # fmt: skip


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(dilation=2, groups=2)])
def test_conv1d_matches_torch(kw):
    g = kw.get("groups", 1)
    check(lambda x, w: F.conv1d(x, w, **kw), lambda x, w: TF.conv1d(x, w, **kw),
          rng.standard_normal((3, 4, 11)), rng.standard_normal((6, 4 // g, 3)))  # fmt: skip


POOL = [
    ("max", dict(kernel_size=2)),
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("max", dict(kernel_size=2, dilation=2)),
    ("avg", dict(kernel_size=2)),
    ("avg", dict(kernel_size=3, stride=2, padding=1)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5)),
]


@pytest.mark.parametrize("kind,kw", POOL, ids=[f"{k}-{v}" for k, v in POOL])
def test_pool2d_matches_torch(kind, kw, device):
    x = rng.standard_normal((2, 3, 7, 8))
    check(
        lambda a: getattr(F, f"{kind}_pool2d")(a, **kw),
        lambda a: getattr(TF, f"{kind}_pool2d")(a, **kw),
        x,
        device=device,
    )


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("size", [1, (2, 3), (3, 3), (5, 4), (None, 4), (7, 6)])
def test_adaptive_pool2d_matches_torch(kind, size):
    name = f"adaptive_{kind}_pool2d"
    check(
        lambda a: getattr(F, name)(a, size),
        lambda a: getattr(TF, name)(a, size),
        rng.standard_normal((2, 3, 7, 6)),
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=(2, 3), dilation=2),
    ],
)
def test_max_pool_return_indices_match_torch(kw):
    x = rng.standard_normal((2, 3, 7, 8))
    out, idx = F.max_pool2d(dg.tensor(x), return_indices=True, **kw)
    out_t, idx_t = TF.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())
    np.testing.assert_array_equal(out.numpy(), out_t.numpy())
    _, idx1 = nn.MaxPool1d(3, 2, 1, return_indices=True)(dg.tensor(x[0]))
    np.testing.assert_array_equal(idx1.numpy(), torch.nn.MaxPool1d(3, 2, 1, return_indices=True)(torch.tensor(x[0]))[1])


def test_pool1d_matches_torch():
    x = rng.standard_normal((2, 3, 9))
    check(lambda a: F.max_pool1d(a, 3, 2), lambda a: TF.max_pool1d(a, 3, 2), x)
    check(lambda a: F.avg_pool1d(a, 2), lambda a: TF.avg_pool1d(a, 2), x)


def test_gradcheck_and_double_backward():
    x = dg.tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
    w = dg.tensor(rng.standard_normal((2, 1, 3, 3)), requires_grad=True)
    assert dg.autograd.gradcheck(lambda a, b: F.conv2d(a, b, stride=2, padding=1, groups=2), [x, w])
    assert dg.autograd.gradcheck(lambda a: F.max_pool2d(a, 2, 1), [x])
    assert dg.autograd.gradcheck(lambda a: F.avg_pool2d(a, 3, 2, 1), [x])
    xt, wt = (torch.tensor(t.detach().numpy(), requires_grad=True) for t in (x, w))
    (gx,) = dg.autograd.grad(F.conv2d(x, w, padding=1, groups=2).tanh().sum(), [x], create_graph=True)
    (gxt,) = torch.autograd.grad(TF.conv2d(xt, wt, padding=1, groups=2).tanh().sum(), [xt], create_graph=True)
    (gx * gx).sum().backward()
    (gxt * gxt).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_conv_layers_match_torch_with_copied_weights():
    for dm, tm, shape in [
        (
            nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3),
            torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3),
            (2, 3, 8, 8),
        ),
        (nn.Conv1d(4, 5, 2, dilation=2), torch.nn.Conv1d(4, 5, 2, dilation=2), (3, 4, 9)),
    ]:
        dm.double(), tm.double()
        dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
        x = rng.standard_normal(shape)
        yd, yt = dm(dg.tensor(x)), tm(torch.tensor(x))
        np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10)
        yd.square().sum().backward()
        yt.square().sum().backward()
        np.testing.assert_allclose(dm.weight.grad.numpy(), tm.weight.grad.numpy(), rtol=1e-8)
        np.testing.assert_allclose(dm.bias.grad.numpy(), tm.bias.grad.numpy(), rtol=1e-8)


def test_conv_default_init_bounds_match_torch_formula():
    m = nn.Conv2d(4, 8, 3)
    bound = 1 / np.sqrt(4 * 9)
    assert np.abs(m.weight.detach().numpy()).max() <= bound and np.abs(m.bias.detach().numpy()).max() <= bound


def test_conv_bad_shapes_name_the_op():
    with pytest.raises(ValueError, match=r"conv2d: input \(1, 3, 2, 2\) is smaller than the kernel"):
        F.conv2d(dg.randn(1, 3, 2, 2), dg.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="groups=2"):
        F.conv2d(dg.randn(1, 3, 5, 5), dg.randn(4, 3, 3, 3), groups=2)


@pytest.mark.parametrize(
    "name,args,kw",
    [
        ("MaxPool2d", (3,), dict(stride=2, padding=1, ceil_mode=True)),
        ("AvgPool2d", (3,), dict(stride=2, padding=1, count_include_pad=False)),
        ("AdaptiveAvgPool2d", ((3, 2),), dict()),
        ("AdaptiveMaxPool2d", ((3, 4),), dict()),
        ("MaxPool1d", (2,), dict()),
        ("AvgPool1d", (3,), dict(stride=1, padding=1)),
    ],
)
def test_pooling_modules_match_torch(name, args, kw):
    shape = (2, 3, 9) if name.endswith("1d") else (2, 3, 7, 8)
    dm, tm = getattr(nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
    check(dm, tm, rng.standard_normal(shape))


@pytest.mark.parametrize(
    "name,args,kw",
    [
        ("Conv2d", (3, 6, 3), dict(stride=2, padding=1, groups=3)),
        ("Conv2d", (3, 6, (3, 2)), dict(bias=False, dilation=2)),
        ("Conv2d", (3, 6, 3), dict(padding="same")),
        ("Conv1d", (4, 5, 2), dict(dilation=2)),
        ("MaxPool2d", (3,), dict(stride=2, padding=1)),
        ("MaxPool1d", (2,), dict()),
        ("AvgPool2d", (3,), dict(stride=2, padding=1)),
        ("AvgPool1d", (3,), dict()),
        ("AdaptiveAvgPool2d", ((3, 2),), dict()),
        ("AdaptiveMaxPool2d", (1,), dict()),
    ],
)
def test_repr_matches_torch(name, args, kw):
    assert repr(getattr(nn, name)(*args, **kw)) == repr(getattr(torch.nn, name)(*args, **kw))


@pytest.mark.parametrize("width", [6, 20])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, groups=2), dict(dilation=(1, 2), padding=(0, 3))])
def test_conv2d_in_batch_slices_equals_one_pass(monkeypatch, kw, width):
    from distgraph.ops import conv

    x = dg.tensor(rng.standard_normal((5, 4, 6, width)), requires_grad=True)
    w = dg.tensor(rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 3)), requires_grad=True)

    def run():
        x.grad = w.grad = None
        y = F.conv2d(x, w, **kw)
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    whole = run()
    monkeypatch.setattr(conv, "COLUMNS_BUDGET", 1)  # one sample per slice
    for a, b in zip(whole, run()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv2d_on_an_empty_batch():
    x = dg.zeros(0, 3, 5, 5, requires_grad=True)
    w = dg.randn(4, 3, 3, 3, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward()
    assert tuple(y.shape) == (0, 4, 5, 5) and tuple(x.grad.shape) == (0, 3, 5, 5) and not w.grad.numpy().any()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "name,args,kw,shape",
    [
        ("Conv2d", (3, 4, 3), dict(padding=(1, 2), stride=2), (2, 3, 7, 6)),
        ("Conv2d", (3, 4, (2, 3)), dict(padding="same", dilation=(2, 1)), (2, 3, 7, 6)),
        ("Conv1d", (3, 4, 4), dict(padding="same"), (2, 3, 9)),
    ],
)
def test_conv_border_padding_modes_match_torch(mode, name, args, kw, shape):
    dm = getattr(nn, name)(*args, padding_mode=mode, **kw).double()
    tm = getattr(torch.nn, name)(*args, padding_mode=mode, **kw).double()
    assert repr(dm) == repr(tm)
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    check(dm, tm, rng.standard_normal(shape))
    x = rng.standard_normal(shape)
    dm(dg.tensor(x)).square().sum().backward()
    tm(torch.tensor(x)).square().sum().backward()
    np.testing.assert_allclose(dm.weight.grad.numpy(), tm.weight.grad.numpy(), rtol=1e-9)


@pytest.mark.parametrize(
    "fn,args,shape,weight",
    [
        ("conv2d", dict(padding=1, groups=3), (3, 7, 6), (6, 1, 3, 3)),
        ("conv1d", dict(padding="same"), (3, 9), (4, 3, 3)),
        ("max_pool2d", dict(kernel_size=2), (3, 7, 6), None),
        ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1), (3, 7, 6), None),
        ("max_pool1d", dict(kernel_size=3, stride=2), (3, 9), None),
        ("avg_pool1d", dict(kernel_size=2), (3, 9), None),
        ("adaptive_avg_pool2d", dict(output_size=(2, 4)), (3, 7, 6), None),
        ("adaptive_max_pool2d", dict(output_size=3), (3, 7, 6), None),
        ("adaptive_avg_pool1d", dict(output_size=4), (2, 3, 9), None),
        ("adaptive_max_pool1d", dict(output_size=4), (3, 9), None),
        ("adaptive_avg_pool1d", dict(output_size=3), (3, 9), None),
    ],
)
def test_unbatched_inputs_and_1d_adaptive_pooling_match_torch(fn, args, shape, weight):
    arrays = (rng.standard_normal(shape),) + ((rng.standard_normal(weight),) if weight else ())
    check(lambda *a: getattr(F, fn)(*a, **args), lambda *a: getattr(TF, fn)(*a, **args), *arrays)


MAX_POOL_SEMANTICS = [
    dict(kernel_size=2),  # disjoint windows: the one-pass backward
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),  # overlapping, padded, ceil_mode
    dict(kernel_size=2, stride=3, ceil_mode=True),  # gaps between windows, a partial last window
    dict(kernel_size=(2, 3), dilation=2, padding=1),
]


def _pool_both(x, kw, grad):
    """distgraph's and torch's max_pool2d (values, indices, input gradient) on the same array; `grad`
    makes the output gradient from a fresh generator, so both get the same."""
    got = []
    for lib, f in ((dg, F), (torch, TF)):
        a = lib.tensor(x, requires_grad=True) if x.dtype.kind == "f" else lib.tensor(x)
        out, idx = f.max_pool2d(a, return_indices=True, **kw)
        if x.dtype.kind == "f":
            out.backward(lib.tensor(grad(np.random.default_rng(1), tuple(out.shape))))
        got.append((np.asarray(out.detach().numpy()), np.asarray(idx.numpy()), a.grad))
    return got


@pytest.mark.parametrize("kw", MAX_POOL_SEMANTICS, ids=str)
def test_max_pool_ties_nan_and_signed_zeros_match_torch_bit_for_bit(kw):
    """Ties route to the first maximum, NaN wins and its index is the last NaN (torch's `val > max ||
    isnan(val)` scan), a tie of -0.0 and 0.0 keeps the first one's sign; the gradient lands there."""
    x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(np.float64)  # many ties
    x[0, 0, 0, :4] = [0.0, -0.0, -0.0, 0.0]
    x[0, 1, 1:3, 1:3] = [[-0.0, 0.0], [0.0, -0.0]]
    x[1, 2, 0, 1], x[1, 2, 1, 0], x[1, 2, 4, 5] = np.nan, np.nan, -np.inf
    for data in (x, np.where(np.isnan(x), 0.0, x)):  # with NaN (exact path) and without (fast path)
        for signed in (data, data + 0.0):  # with and without -0.0
            (out, idx, gx), (out_t, idx_t, gx_t) = _pool_both(signed, kw, lambda r, s: r.standard_normal(s))
            np.testing.assert_array_equal(idx, idx_t)
            np.testing.assert_array_equal(out.view(np.int64), out_t.view(np.int64))  # the bits: -0.0 and NaN too
            if kw == MAX_POOL_SEMANTICS[0]:  # overlapping windows sum in another order than torch's
                np.testing.assert_array_equal(gx.numpy().view(np.int64), gx_t.numpy().view(np.int64))
            np.testing.assert_allclose(gx.numpy(), gx_t.numpy(), rtol=1e-14)


@pytest.mark.parametrize("kw", MAX_POOL_SEMANTICS, ids=str)
def test_max_pool_routes_negative_zero_and_infinite_gradients_as_torch(kw):
    """An inf gradient reaches only its window's argmax (never inf·0 = NaN on the others); a -0.0
    gradient arrives as torch's 0 + (-0.0) = +0.0."""
    x = rng.standard_normal((2, 3, 7, 8))
    seed = lambda r, s: np.where(r.random(s) < 0.3, np.inf, -0.0) * r.choice([-1.0, 1.0], s)  # noqa: E731
    (_, _, gx), (_, _, gx_t) = _pool_both(x, kw, seed)
    np.testing.assert_array_equal(gx.numpy().view(np.int64), gx_t.numpy().view(np.int64))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_max_pool_on_integers_pads_with_the_minimum_and_matches_torch(dtype):
    x = rng.integers(-5, 5, (2, 3, 7, 8)).astype(dtype)
    x[0, 0, 0, 0] = np.iinfo(dtype).min  # the padding value itself, in a padded corner window
    for kw in MAX_POOL_SEMANTICS:
        (out, idx, _), (out_t, idx_t, _) = _pool_both(x, kw, None)
        np.testing.assert_array_equal(out, out_t)
        np.testing.assert_array_equal(idx, idx_t)


@pytest.mark.parametrize("kw", MAX_POOL_SEMANTICS, ids=str)
def test_max_pool_second_derivative_matches_torch(kw):
    """Through max_pool2d_scatter (the disjoint one-pass path and the accumulating one) and its gather."""
    x = rng.standard_normal((2, 3, 7, 8))
    grads = []
    for lib, f in ((dg, F), (torch, TF)):
        a = lib.tensor(x, requires_grad=True)
        (ga,) = lib.autograd.grad((f.max_pool2d(a, **kw) ** 3).sum(), [a], create_graph=True)
        (ga * ga).sum().backward()
        grads.append((ga.detach().numpy(), a.grad.numpy()))
    for ours, theirs in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
