"""3-d convolution and pooling against torch in float64: conv3d / conv_transpose3d over random strides,
paddings, dilations, groups and output_paddings (values and gradients of input, weight and bias, double
backward), the 3-d pools (max with indices and ties, average with its divisor options, adaptive, power,
unpooling), the modules' reprs and state, the lazy layers, finite differences, float32, integer input
and the errors for arguments torch refuses."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import DTypeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional


def ints(rng, lo, hi, n=3):
    return tuple(int(v) for v in rng.integers(lo, hi, n))


def conv_case(rng):
    """A random conv3d torch accepts: output non-empty in every dim."""
    groups = int(rng.integers(1, 3))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k, s, d, p = ints(rng, 1, 4), ints(rng, 1, 3), ints(rng, 1, 3), ints(rng, 0, 2)
    size = tuple(max(1, d_ * (k_ - 1) + 1 - 2 * p_) + int(rng.integers(0, 3)) for k_, d_, p_ in zip(k, d, p))
    x = rng.standard_normal((int(rng.integers(1, 3)), cin, *size))
    return (
        x,
        rng.standard_normal((cout, cin // groups, *k)),
        rng.standard_normal(cout),
        dict(stride=s, padding=p, dilation=d, groups=groups),
    )


@pytest.mark.parametrize("seed", range(12))
def test_conv3d_random_arguments_match_torch(seed, device):
    rng = np.random.default_rng(seed)
    x, w, b, kw = conv_case(rng)
    args = (x, w, b) if seed % 2 else (x, w)
    check(lambda *a: F.conv3d(*a, **kw), lambda *a: TF.conv3d(*a, **kw), *args, device=device)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own note on even kernels
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("dilation", [1, (2, 1, 3)])
def test_conv3d_string_padding_matches_torch(padding, dilation):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 5, 6, 11)), rng.standard_normal((4, 3, 2, 3, 4)), rng.standard_normal(4)
    kw = dict(padding=padding, dilation=dilation)
    check(lambda *a: F.conv3d(*a, **kw), lambda *a: TF.conv3d(*a, **kw), x, w, b)


def test_conv3d_large_batch_runs_in_slices(monkeypatch):
    """Columns over COLUMNS_BUDGET are built batch slice by batch slice; the result is the same."""
    from distgraph.ops import conv

    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((5, 2, 4, 4, 4)), rng.standard_normal((3, 2, 2, 2, 2))
    monkeypatch.setattr(conv, "COLUMNS_BUDGET", 2 * 8 * 8 * 27)  # two samples' columns at a time
    check(lambda a, b: F.conv3d(a, b, padding=1), lambda a, b: TF.conv3d(a, b, padding=1), x, w)


def transpose_case(rng):
    """A random conv_transpose3d torch accepts: output_padding below stride or dilation."""
    groups = int(rng.integers(1, 3))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k, s, d = ints(rng, 1, 4), ints(rng, 1, 4), ints(rng, 1, 3)
    op = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
    size = ints(rng, 1, 4)
    p = tuple(int(rng.integers(0, ((n - 1) * si + di * (ki - 1) + o) // 2 + 1))
              for n, si, di, ki, o in zip(size, s, d, k, op))  # fmt: skip
    x = rng.standard_normal((int(rng.integers(1, 3)), cin, *size))
    kw = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    return x, rng.standard_normal((cin, cout // groups, *k)), rng.standard_normal(cout), kw


@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose3d_random_arguments_match_torch(seed, device):
    rng = np.random.default_rng(100 + seed)
    x, w, b, kw = transpose_case(rng)
    args = (x, w, b) if seed % 2 else (x, w)
    check(lambda *a: F.conv_transpose3d(*a, **kw), lambda *a: TF.conv_transpose3d(*a, **kw), *args, device=device)


def test_conv_transpose3d_output_padding_past_stride_matches_torch():
    """stride ≤ output_padding < dilation: the full output cropped and zero-extended."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 3, 2, 3)), rng.standard_normal((2, 3, 2, 2, 2))
    kw = dict(stride=1, padding=(0, 1, 0), output_padding=(1, 2, 0), dilation=(2, 3, 1))
    check(lambda *a: F.conv_transpose3d(*a, **kw), lambda *a: TF.conv_transpose3d(*a, **kw), x, w)


@pytest.mark.parametrize("name", ["conv3d", "conv_transpose3d"])
def test_conv3d_double_backward_matches_torch(name):
    rng = np.random.default_rng(7)
    xa, wa = rng.standard_normal((2, 4, 3, 4, 3)), rng.standard_normal((4, 2, 2, 3, 2))
    kw = dict(stride=(2, 1, 1), padding=1, dilation=(1, 1, 2), groups=2)
    x, w = dg.tensor(xa, requires_grad=True), dg.tensor(wa, requires_grad=True)
    xt, wt = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    gx, gw = dg.autograd.grad(getattr(F, name)(x, w, **kw).tanh().sum(), [x, w], create_graph=True)
    gxt, gwt = torch.autograd.grad(getattr(TF, name)(xt, wt, **kw).tanh().sum(), [xt, wt], create_graph=True)
    ((gx * gx).sum() + (gw * gw).sum()).backward()
    ((gxt * gxt).sum() + (gwt * gwt).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-7, atol=1e-10)


def _leaf(rng, shape):
    return dg.tensor(rng.standard_normal(shape), requires_grad=True)


def test_3d_ops_pass_gradcheck():
    """Finite differences agree with every op's analytic gradient on small sizes."""
    rng = np.random.default_rng(8)
    x, w, b = _leaf(rng, (1, 2, 3, 4, 3)), _leaf(rng, (2, 1, 2, 2, 2)), _leaf(rng, (2,))
    gc = dg.autograd.gradcheck
    assert gc(lambda x, w, b: F.conv3d(x, w, b, padding=(1, 0, 1), groups=2), [x, w, b])
    assert gc(lambda x, w, b: F.conv_transpose3d(x, w, b, stride=2, output_padding=1, groups=2), [x, w, b])
    assert gc(lambda x: F.max_pool3d(x, 2, 1, 1), [x])
    assert gc(lambda x: F.avg_pool3d(x, 2, 1, 1, ceil_mode=True, count_include_pad=False), [x])
    assert gc(lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2)), [x])
    assert gc(lambda x: F.adaptive_max_pool3d(x, (2, 3, 2)), [x])
    assert gc(lambda x: F.lp_pool3d(x, 2, 2, 1), [x])


@pytest.mark.parametrize("seed", range(10))
def test_max_pool3d_random_arguments_match_torch_with_indices(seed, device):
    rng = np.random.default_rng(200 + seed)
    k, s, d = ints(rng, 1, 4), ints(rng, 1, 3), ints(rng, 1, 3)
    p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
    size = tuple(di * (ki - 1) + 1 + int(rng.integers(0, 4)) for ki, di in zip(k, d))
    x = rng.standard_normal((2, 2, *size))
    if seed % 3 == 0:
        x = np.round(x)  # ties: the first maximum wins, as torch's
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=bool(seed % 2), return_indices=True)
    check(lambda a: F.max_pool3d(a, **kw), lambda a: TF.max_pool3d(a, **kw), x, device=device)


def test_max_pool3d_special_values_and_dtypes_match_torch():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 4, 4, 4))
    x[0, 0, 0, 0, :2] = np.nan
    x[0, 1, 1, :, 1] = -np.inf
    x[0, 1, 2, 2, 2] = -0.0
    check(
        lambda a: F.max_pool3d(a, 2, 1, return_indices=True), lambda a: TF.max_pool3d(a, 2, 1, return_indices=True), x
    )
    check(lambda a: F.max_pool3d(a, 3, 2, 1), lambda a: TF.max_pool3d(a, 3, 2, 1), x, dtype=np.float32, rtol=1e-6)
    xi = rng.integers(-5, 5, (2, 4, 5, 3))  # unbatched (C, D, H, W) integers
    out = F.max_pool3d(dg.tensor(xi), 2, return_indices=True)
    ref = TF.max_pool3d(torch.tensor(xi), 2, return_indices=True)
    for a, b in zip(out, ref):
        assert a.dtype.name == str(b.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("divisor_override", [None, 3])
def test_avg_pool3d_matches_torch(ceil_mode, count_include_pad, divisor_override):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 5, 6, 7))
    kw = dict(kernel_size=(3, 2, 3), stride=(2, 1, 2), padding=(1, 1, 0), ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor_override)  # fmt: skip
    check(lambda a: F.avg_pool3d(a, **kw), lambda a: TF.avg_pool3d(a, **kw), x)
    check(lambda a: F.avg_pool3d(a, **kw), lambda a: TF.avg_pool3d(a, **kw), x, dtype=np.float32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(3, 2, 4), (4, 5, 3), 2, (None, 3, 5), (6, 7, 8), 1])
def test_adaptive_pool3d_matches_torch(size):
    rng = np.random.default_rng(11)
    for x in (rng.standard_normal((2, 2, 6, 7, 8)), np.round(rng.standard_normal((2, 6, 7, 8)))):
        check(lambda a: F.adaptive_avg_pool3d(a, size), lambda a: TF.adaptive_avg_pool3d(a, size), x)
        check(lambda a: F.adaptive_max_pool3d(a, size, True), lambda a: TF.adaptive_max_pool3d(a, size, True), x)
    check(lambda a: F.adaptive_max_pool3d_with_indices(a, size), lambda a: TF.adaptive_max_pool3d_with_indices(a, size), x)  # fmt: skip


@pytest.mark.parametrize("norm_type", [1, 2, 3.5, float("inf")])
def test_lp_pool3d_matches_torch(norm_type):
    rng = np.random.default_rng(12)
    x = np.abs(rng.standard_normal((2, 2, 5, 4, 6))) + 0.1
    for kw in (dict(kernel_size=2), dict(kernel_size=(2, 3, 2), stride=(1, 2, 3), ceil_mode=True)):
        check(lambda a: F.lp_pool3d(a, norm_type, **kw), lambda a: TF.lp_pool3d(a, norm_type, **kw), x)


def test_max_unpool3d_inverts_max_pool3d_as_torch():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 5, 6, 4))
    for kw, size in ((dict(kernel_size=2), None), (dict(kernel_size=(2, 3, 2), stride=(2, 2, 1), padding=1), x.shape),
                     (dict(kernel_size=2), (5, 7, 5))):  # fmt: skip
        xd, xt = dg.tensor(x), torch.tensor(x)
        _, idx = F.max_pool3d_with_indices(xd, **kw)
        _, idx_t = TF.max_pool3d_with_indices(xt, **kw)
        vals = rng.standard_normal(tuple(idx.shape))
        check(lambda v: F.max_unpool3d(v, idx, output_size=size, **kw),
              lambda v: TF.max_unpool3d(v, idx_t, output_size=size, **kw), vals)  # fmt: skip


def _copy(dst, src):
    dst.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in src.state_dict().items()})


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (0, 1, 2), "same"])
def test_conv3d_module_matches_torch(mode, padding):
    kw = dict(kernel_size=(3, 2, 3), padding=padding, padding_mode=mode, groups=2)
    m, mt = nn.Conv3d(4, 6, **kw, dtype=dg.float64), torch.nn.Conv3d(4, 6, **kw).double()
    assert repr(m) == repr(mt)
    assert list(m.state_dict()) == list(mt.state_dict())
    assert tuple(m.weight.shape) == tuple(mt.weight.shape)
    _copy(m, mt)
    x = np.random.default_rng(14).standard_normal((2, 4, 4, 5, 6))
    check(m, mt, x)
    check(m, mt, x[0])  # unbatched


def test_conv3d_default_init_follows_torch_bounds():
    m = nn.Conv3d(3, 5, (2, 3, 4))
    bound = 1 / np.sqrt(3 * 2 * 3 * 4)  # kaiming_uniform(a=√5) and the bias share this bound
    assert np.abs(m.weight.detach().numpy()).max() <= bound and np.abs(m.bias.detach().numpy()).max() <= bound
    assert np.abs(m.weight.detach().numpy()).max() > bound / 2


def test_conv_transpose3d_module_matches_torch_with_output_size():
    kw = dict(kernel_size=3, stride=(2, 2, 3), padding=1, groups=2, dilation=(1, 2, 1), bias=True)
    m, mt = nn.ConvTranspose3d(4, 6, **kw, dtype=dg.float64), torch.nn.ConvTranspose3d(4, 6, **kw).double()
    assert repr(m) == repr(mt) and list(m.state_dict()) == list(mt.state_dict())
    _copy(m, mt)
    x = np.random.default_rng(15).standard_normal((2, 4, 3, 4, 2))
    check(m, mt, x)
    for size in ((6, 9, 5), (2, 6, 6, 10, 6)):
        check(lambda a: m(a, output_size=size), lambda a: mt(a, output_size=size), x)
    with pytest.raises(ValueError, match="valid sizes"):
        m(dg.tensor(x), output_size=(9, 9, 9))
    with pytest.raises(ValueError):
        nn.ConvTranspose3d(2, 2, 3, padding_mode="reflect")


def test_pool3d_modules_match_torch():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 3, 6, 5, 7))
    pairs = [
        (nn.MaxPool3d(2, 1, 1, 2, True, True), torch.nn.MaxPool3d(2, 1, 1, 2, True, True)),
        (nn.AvgPool3d((2, 3, 2), 2, 1, True, False, None), torch.nn.AvgPool3d((2, 3, 2), 2, 1, True, False, None)),
        (nn.AdaptiveAvgPool3d((2, None, 3)), torch.nn.AdaptiveAvgPool3d((2, None, 3))),
        (nn.AdaptiveMaxPool3d((4, 3, 5), True), torch.nn.AdaptiveMaxPool3d((4, 3, 5), True)),
        (nn.LPPool3d(2, (2, 2, 3), 1), torch.nn.LPPool3d(2, (2, 2, 3), 1)),
    ]
    for m, mt in pairs:
        assert repr(m) == repr(mt)
        check(m, mt, np.abs(x) + 0.1)
    out, idx = nn.MaxPool3d(2, return_indices=True)(dg.tensor(x))
    unpool, unpool_t = nn.MaxUnpool3d(2), torch.nn.MaxUnpool3d(2)
    assert repr(unpool) == repr(unpool_t)
    _, idx_t = torch.nn.MaxPool3d(2, return_indices=True)(torch.tensor(x))
    size = x.shape[2:]  # the default, (3 - 1)·2 + 2 = 4 rows, would not hold the indices of 5 rows
    check(lambda v: unpool(v, idx, size), lambda v: unpool_t(v, idx_t, size), out.numpy())


@pytest.mark.parametrize(
    "lazy, eager, args, shape",
    [
        ("LazyConv3d", "Conv3d", (4, (2, 3, 2)), (2, 3, 4, 5, 4)),
        ("LazyConvTranspose1d", "ConvTranspose1d", (4, 3, 2, 1, 1, 2), (2, 6, 5)),
        ("LazyConvTranspose2d", "ConvTranspose2d", (4, 3, 2, 1, 1, 2), (2, 6, 5, 4)),
        ("LazyConvTranspose3d", "ConvTranspose3d", (4, 3, 2, 1, 1, 2), (6, 3, 4, 2)),
        ("LazyInstanceNorm1d", "InstanceNorm1d", (), (2, 3, 5)),
        ("LazyInstanceNorm2d", "InstanceNorm2d", (), (2, 3, 4, 5)),
        ("LazyInstanceNorm3d", "InstanceNorm3d", (), (2, 3, 4, 5, 3)),
    ],
)
def test_lazy_modules_infer_their_size_as_torch(lazy, eager, args, shape):
    dg.manual_seed(0)
    m, mt = getattr(nn, lazy)(*args, dtype=dg.float64), getattr(torch.nn, lazy)(*args, dtype=torch.float64)
    assert repr(m) == repr(mt)
    assert m.has_uninitialized_params()
    x = np.random.default_rng(17).standard_normal(shape)
    m(dg.tensor(x)), mt(torch.tensor(x))
    assert type(m) is getattr(nn, eager) and repr(m) == repr(mt)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        k: tuple(v.shape) for k, v in mt.state_dict().items()
    }
    _copy(m, mt)
    check(m, mt, x)


def test_lazy_conv_transpose3d_loads_a_state_dict_before_its_first_forward():
    """The checkpoint's shapes materialize the weight; in_channels stays 0, as torch's does."""
    src = torch.nn.ConvTranspose3d(4, 6, 2, groups=2).double()
    m = nn.LazyConvTranspose3d(6, 2, groups=2, dtype=dg.float64)
    mt = torch.nn.LazyConvTranspose3d(6, 2, groups=2, dtype=torch.float64)
    _copy(m, src)
    mt.load_state_dict(src.state_dict())
    check(m, mt, np.random.default_rng(19).standard_normal((1, 4, 2, 3, 2)))
    assert type(m) is nn.ConvTranspose3d and repr(m) == repr(mt)


def test_conv3d_float32_and_integer_inputs_match_torch():
    rng = np.random.default_rng(18)
    x, w, b = rng.standard_normal((2, 2, 4, 3, 5)), rng.standard_normal((3, 2, 2, 2, 2)), rng.standard_normal(3)
    kw = dict(stride=(1, 2, 1), padding=1)
    out = check(lambda *a: F.conv3d(*a, **kw), lambda *a: TF.conv3d(*a, **kw), x, w, b, dtype=np.float32, rtol=1e-5,
                atol=1e-5)  # fmt: skip
    assert out.dtype == dg.float32
    xi, wi = rng.integers(-3, 4, (1, 2, 3, 3, 3)), rng.integers(-3, 4, (2, 2, 2, 2, 2))
    np.testing.assert_array_equal(F.conv3d(dg.tensor(xi), dg.tensor(wi)).numpy(),
                                  TF.conv3d(torch.tensor(xi), torch.tensor(wi)).numpy())  # fmt: skip
    np.testing.assert_array_equal(F.conv_transpose3d(dg.tensor(xi), dg.tensor(wi), stride=2).numpy(),
                                  TF.conv_transpose3d(torch.tensor(xi), torch.tensor(wi), stride=2).numpy())  # fmt: skip


def test_compiled_3d_network_matches_eager():
    dg.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.ConvTranspose3d(4, 2, 2, 2),
                          nn.AvgPool3d(2), nn.AdaptiveMaxPool3d((1, 2, 1)))  # fmt: skip
    x = dg.randn(2, 2, 4, 6, 4)
    with dg.no_grad():
        np.testing.assert_allclose(dg.compile(model, [x])(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_adaptive_avg_pool3d_keeps_an_inf_in_its_own_windows_as_torch():
    x = np.random.default_rng(20).standard_normal((1, 2, 5, 6, 7))
    x[0, 0, 1, 2, 3], x[0, 1, 4, 0, 0], x[0, 1, 4, 0, 1] = np.inf, np.inf, -np.inf
    check(lambda a: F.adaptive_avg_pool3d(a, (3, 4, 5)), lambda a: TF.adaptive_avg_pool3d(a, (3, 4, 5)), x, grad=False)


def test_special_values_raise_no_runtime_warning():
    x = dg.tensor(np.array([np.inf, -np.inf, np.nan, 0.0] * 16).reshape(1, 1, 4, 4, 4), requires_grad=True)
    w = dg.tensor(np.ones((1, 1, 2, 2, 2)), requires_grad=True)
    outs = [F.conv3d(x, w), F.conv_transpose3d(x, w), F.max_pool3d(x, 2), F.avg_pool3d(x, 2), F.lp_pool3d(x, 2, 2),
            F.adaptive_avg_pool3d(x, 3), F.adaptive_max_pool3d(x, 3)]  # fmt: skip
    sum(o.sum() for o in outs).backward()  # run under -W error::RuntimeWarning


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.conv3d(dg.zeros(2, 3, 3), dg.zeros(1, 2, 2, 2, 2)), ShapeError, "conv3d: expected 4-D"),
        (lambda: F.conv3d(dg.zeros(1, 4, 3, 3, 3), dg.zeros(2, 3, 2, 2, 2), groups=2), ShapeError, "groups=2"),
        (lambda: F.conv3d(dg.zeros(1, 2, 3, 3, 3), dg.zeros(1, 2, 2, 2, 2, dtype=dg.float64)), DTypeError, "Float but found Double"),
        (lambda: F.conv3d(dg.zeros(1, 1, 2, 3, 3), dg.zeros(1, 1, 3, 2, 2)), ShapeError, "smaller than the kernel"),
        (lambda: F.conv3d(dg.zeros(1, 1, 3, 3, 3), dg.zeros(1, 1, 2, 2, 2), stride=(1, 2)), ShapeError, "stride"),
        (lambda: F.conv3d(dg.zeros(1, 1, 4, 4, 4), dg.zeros(1, 1, 2, 2, 2), padding="same", stride=2), ShapeError,
         "strided"),
        (lambda: F.conv3d(dg.zeros(1, 1, 4, 4, 4), dg.zeros(2, 1, 2, 2, 2), dg.zeros(3)), ShapeError, "bias"),
        (lambda: F.conv_transpose3d(dg.zeros(1, 2, 3, 3, 3), dg.zeros(2, 1, 2, 2, 2), stride=2, output_padding=2),
         ShapeError, "output_padding"),
        (lambda: F.max_pool3d(dg.zeros(1, 4, 4), 2), ShapeError, "max_pool3d: expected 4-D"),
        (lambda: F.max_pool3d(dg.zeros(1, 1, 4, 4, 4), 2, padding=2), ShapeError, "at most half"),
        (lambda: F.max_pool3d(dg.zeros(1, 1, 4, 1, 4), 2), ShapeError, "output size is too small"),
        (lambda: F.avg_pool3d(dg.zeros(1, 1, 4, 4, 4, dtype=dg.int64), 2), DTypeError, "floating point"),
        (lambda: F.avg_pool3d(dg.zeros(1, 1, 4, 4, 4), 2, divisor_override=0), ShapeError, "divisor_override"),
        (lambda: F.adaptive_avg_pool3d(dg.zeros(1, 1, 4, 4, 4), (2, 2)), ShapeError, "3 values"),
        (lambda: F.adaptive_max_pool3d(dg.zeros(1, 1, 4, 4, 4), 0), ShapeError, "positive"),
        (lambda: F.max_unpool3d(dg.zeros(1, 1, 2, 2, 2), dg.zeros(1, 1, 2, 2, 2, dtype=dg.int64) + 99, 2),
         IndexError, "invalid max index"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
