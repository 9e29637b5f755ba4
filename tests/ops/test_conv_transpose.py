"""conv_transpose1d/2d and ConvTranspose1d/2d against torch in float64: a seeded random fuzz over stride,
padding, output_padding, dilation, groups and bias (values and the gradients of input, weight and bias),
double backward, the layers' output_size, and the errors for arguments torch refuses."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional


def transpose_case(rng, dims):
    """A random configuration torch accepts: output_padding below stride or dilation, output non-empty."""
    groups = int(rng.integers(1, 4))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k, s, d = (tuple(int(v) for v in rng.integers(1, hi, dims)) for hi in (5, 4, 4))
    op = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
    size = tuple(int(v) for v in rng.integers(1, 7, dims))
    # padding may eat at most the whole output: (n - 1)·s + d·(k - 1) + op + 1 > 2p
    p = tuple(
        int(rng.integers(0, ((n - 1) * si + di * (ki - 1) + o) // 2 + 1)) for n, si, di, ki, o in zip(size, s, d, k, op)
    )
    kw = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    if dims == 1:
        kw = {key: v[0] if isinstance(v, tuple) else v for key, v in kw.items()}
    x = rng.standard_normal((int(rng.integers(1, 3)), cin, *size))
    return x, rng.standard_normal((cin, cout // groups, *k)), rng.standard_normal(cout), kw


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("seed", range(40))
def test_conv_transpose_random_arguments_match_torch(dims, seed, device):
    rng = np.random.default_rng(1000 * dims + seed)
    x, w, b, kw = transpose_case(rng, dims)
    name = f"conv_transpose{dims}d"
    args = (x, w, b) if rng.integers(2) else (x, w)
    check(lambda *a: getattr(F, name)(*a, **kw), lambda *a: getattr(TF, name)(*a, **kw), *args, device=device)


@pytest.mark.parametrize(
    "kw", [dict(stride=2, padding=1, output_padding=1), dict(dilation=3, padding=1, output_padding=2)]
)
def test_conv_transpose2d_double_backward_matches_torch(kw):
    rng = np.random.default_rng(7)
    xa, wa = rng.standard_normal((2, 4, 3, 4)), rng.standard_normal((4, 3, 3, 2))
    x, w = dg.tensor(xa, requires_grad=True), dg.tensor(wa, requires_grad=True)
    xt, wt = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    gx, gw = dg.autograd.grad(F.conv_transpose2d(x, w, **kw).tanh().sum(), [x, w], create_graph=True)
    gxt, gwt = torch.autograd.grad(TF.conv_transpose2d(xt, wt, **kw).tanh().sum(), [xt, wt], create_graph=True)
    ((gx * gx).sum() + (gw * gw).sum()).backward()
    ((gxt * gxt).sum() + (gwt * gwt).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_conv_transpose_unbatched_input_matches_torch():
    rng = np.random.default_rng(3)
    check(lambda x, w: F.conv_transpose2d(x, w, stride=2), lambda x, w: TF.conv_transpose2d(x, w, stride=2),
          rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 2, 3, 3)))  # fmt: skip
    check(lambda x, w: F.conv_transpose1d(x, w, padding=1), lambda x, w: TF.conv_transpose1d(x, w, padding=1),
          rng.standard_normal((3, 6)), rng.standard_normal((3, 2, 3)))  # fmt: skip


LAYERS = [
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5, 4), None),
    ("ConvTranspose2d", (3, 2, (2, 3)), dict(stride=(2, 3), bias=False), (1, 3, 4, 3), (9, 10)),
    ("ConvTranspose2d", (3, 2, 3), dict(stride=2, padding=1), (2, 3, 4, 4), (2, 2, 8, 8)),
    ("ConvTranspose1d", (4, 2, 3), dict(stride=3, dilation=2), (2, 4, 6), [21]),
    ("ConvTranspose1d", (2, 4, 2), dict(stride=2, groups=2), (2, 5), None),
]


@pytest.mark.parametrize("name,args,kw,shape,output_size", LAYERS)
def test_conv_transpose_layers_match_torch_with_copied_weights(name, args, kw, shape, output_size):
    dm, tm = getattr(nn, name)(*args, **kw).double(), getattr(torch.nn, name)(*args, **kw).double()
    assert repr(dm) == repr(tm)
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = np.random.default_rng(5).standard_normal(shape)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd, yt = dm(xd, output_size=output_size), tm(xt, output_size=output_size)
    assert tuple(yd.shape) == tuple(yt.shape)
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    yd.square().sum().backward()
    yt.square().sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-12)
    for (pn, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=pn)


def test_conv_transpose_default_init_bounds_follow_torch_fan_in():
    m = nn.ConvTranspose2d(8, 4, 3, groups=2)  # fan_in is weight dim 1 (out/groups) times the kernel
    assert tuple(m.weight.shape) == (8, 2, 3, 3)
    bound = 1 / np.sqrt(2 * 9)
    assert np.abs(m.weight.detach().numpy()).max() <= bound and np.abs(m.bias.detach().numpy()).max() <= bound
    assert np.abs(m.bias.detach().numpy()).max() > 1 / np.sqrt(8 * 9)  # not in-channels' smaller bound (8 draws)


ERRORS = [
    (lambda: F.conv_transpose2d(dg.randn(1, 2, 4, 4), dg.randn(2, 3, 3, 3), stride=2, output_padding=2),
     "conv_transpose2d: output_padding .* smaller than either stride"),
    (lambda: F.conv_transpose2d(dg.randn(1, 2, 4, 4), dg.randn(2, 3, 3, 3), output_padding=1),
     r"output_padding \(1, 1\)"),
    (lambda: F.conv_transpose2d(dg.randn(1, 2, 4, 4), dg.randn(3, 3, 3, 3)), r"input \(1, 2, 4, 4\).*weight \(3, 3, 3, 3\)"),
    (lambda: F.conv_transpose2d(dg.randn(1, 2, 4, 4), dg.randn(2, 3, 3, 3), groups=4), "groups=4"),
    (lambda: F.conv_transpose2d(dg.randn(1, 2, 4, 4), dg.randn(2, 3, 3, 3), padding=5), r"output size \(-4, -4\)"),
    (lambda: F.conv_transpose2d(dg.randn(2, 4, 4), dg.randn(2, 3, 3)), "conv_transpose2d: expected 3-D or 4-D input"),
    (lambda: F.conv_transpose1d(dg.randn(1, 2, 4), dg.randn(2, 3, 3), stride=-1), "conv_transpose1d: stride must be positive"),
    (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2)(dg.randn(1, 2, 4, 4), output_size=(11, 9)),
     r"ConvTranspose2d: requested an output size of \[11, 9\], but valid sizes range from \[9, 9\] to \[10, 10\]"),
    (lambda: nn.ConvTranspose1d(2, 3, 3)(dg.randn(1, 2, 4), output_size=(1, 2, 3, 4)), "output_size must have 1 or 3"),
    (lambda: nn.ConvTranspose2d(2, 3, 3, padding_mode="reflect"), 'only "zeros" padding mode'),
]  # fmt: skip


@pytest.mark.parametrize("fn,message", ERRORS)
def test_conv_transpose_bad_arguments_raise_errors_naming_the_op(fn, message):
    with pytest.raises(ValueError, match=message):
        fn()
