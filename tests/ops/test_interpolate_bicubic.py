"""interpolate(mode="bicubic") and antialias=True (bilinear, bicubic) against torch in float64: values and
input gradients on seeded random shapes and arguments (size or scale_factor, recompute_scale_factor,
align_corners both ways, up and down, odd and 1-pixel sizes), float32, second-order gradients, a
finite-difference check, the errors for arguments torch refuses, and the three places where torch's
gradient is not its forward's adjoint (there this one is)."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional


def resize_case(rng, mode, antialias):
    """Input shape and keyword arguments: 1 to 9 pixels a side, outputs 1 to 13 or scale factors 0.2 to 3.5."""
    shape = (2, 2, *(int(v) for v in rng.integers(1, 10, 2)))
    kw = {"mode": mode, "align_corners": bool(rng.integers(2)), "antialias": antialias}
    if rng.integers(2):
        kw["size"] = tuple(int(v) for v in rng.integers(1, 14, 2))
    else:
        kw["scale_factor"] = tuple(float(np.round(rng.uniform(max(1.0 / n, 0.2), 3.5), 2)) + 0.001 for n in shape[2:])
        if rng.integers(2):
            kw["recompute_scale_factor"] = bool(rng.integers(2))
    return shape, kw


def out_size(shape, kw):
    return tuple(TF.interpolate(torch.zeros(1, 1, *shape[2:]), **kw).shape[2:])


def torch_gradient_disagrees(shape, kw):
    """Where torch 2.13's backward is not the adjoint of its forward (see test_gradient_is_the_adjoint...):
    bicubic with an output as large as its input under a scale_factor ≠ 1 (the backward copies), and
    antialias on a dim kept at its size under a scale_factor ≠ 1 (the forward copies it). With align_corners
    a kept size is a copy both ways."""
    scales = kw.get("scale_factor")
    if scales is None or kw.get("recompute_scale_factor") or kw["align_corners"]:
        return False
    out = out_size(shape, kw)
    if kw["antialias"]:
        return any(o == n and s != 1 for o, n, s in zip(out, shape[2:], scales))
    return out == shape[2:] and any(s != 1 for s in scales)


def torch_forward_is_wrong(shape, kw):
    """torch 2.13's antialias forward repeats the first output row when it resizes the height to width 1."""
    out = out_size(shape, kw)
    return kw["antialias"] and out[1] == 1 and out[0] != shape[2]


@pytest.mark.parametrize("seed", range(60))
def test_bicubic_random_arguments_match_torch(seed, device):
    rng = np.random.default_rng(seed)
    shape, kw = resize_case(rng, "bicubic", False)
    grad = not torch_gradient_disagrees(shape, kw)
    check(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw), rng.standard_normal(shape),
          grad=grad, device=device)  # fmt: skip


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialias_random_arguments_match_torch(mode, seed, device):
    rng = np.random.default_rng(100 + seed)
    shape, kw = resize_case(rng, mode, True)
    while torch_forward_is_wrong(shape, kw):  # covered by test_antialias_to_width_one_...
        shape, kw = resize_case(rng, mode, True)
    grad = not torch_gradient_disagrees(shape, kw)
    check(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw), rng.standard_normal(shape),
          grad=grad, device=device)  # fmt: skip


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "shape,size",
    [((7, 9), (3, 4)), ((5, 5), (13, 11)), ((9, 4), (2, 11)), ((31, 17), (4, 3)), ((3, 8), (3, 5)), ((6, 6), (6, 6))],
)
def test_up_and_down_by_size_match_torch(shape, size, align_corners, mode, antialias):
    """Odd sizes and large factors (31 → 4 widens the antialias window to 2·ceil(2·7.75) + 1 taps)."""
    if mode == "bilinear" and not antialias:
        pytest.skip("covered by test_resample.py")
    kw = dict(size=size, mode=mode, align_corners=align_corners, antialias=antialias)
    check(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw),
          np.random.default_rng(5).standard_normal((2, 3, *shape)))  # fmt: skip


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale", [2, 3, 0.5, 0.25, 1.7, (0.3, 2.6)])
def test_scale_factors_match_torch(scale, align_corners, mode, antialias):
    if mode == "bilinear" and not antialias:
        pytest.skip("covered by test_resample.py")
    kw = dict(scale_factor=scale, mode=mode, align_corners=align_corners, antialias=antialias)
    check(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw),
          np.random.default_rng(6).standard_normal((1, 2, 8, 12)))  # fmt: skip


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape,size", [((1, 1), (1, 1)), ((1, 1), (4, 3)), ((5, 1), (2, 3)), ((1, 6), (1, 2)),
                                        ((4, 5), (1, 1)), ((1, 3), (5, 7))])  # fmt: skip
def test_one_pixel_inputs_and_outputs_match_torch(shape, size, align_corners, mode, antialias):
    kw = dict(size=size, mode=mode, align_corners=align_corners, antialias=antialias)
    check(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw),
          np.random.default_rng(7).standard_normal((2, 2, *shape)))  # fmt: skip


@pytest.mark.parametrize("kw", [dict(mode="bicubic"), dict(mode="bicubic", antialias=True),
                                dict(mode="bilinear", antialias=True)])  # fmt: skip
def test_float32_matches_torch(kw):
    x = np.random.default_rng(8).standard_normal((2, 2, 9, 7))
    for size in [(4, 3), (15, 12)]:
        for align_corners in (False, True):
            args = dict(kw, size=size, align_corners=align_corners)
            out = check(lambda a: F.interpolate(a, **args), lambda a: TF.interpolate(a, **args), x,
                        dtype=np.float32, rtol=1e-5, atol=1e-5)  # fmt: skip
            assert out.dtype == dg.float32


@pytest.mark.parametrize("kw", [dict(size=(7, 5)), dict(size=(2, 3), antialias=True),
                                dict(scale_factor=0.6, antialias=True, align_corners=True)])  # fmt: skip
def test_bicubic_double_backward_matches_torch(kw):
    xa = np.random.default_rng(4).standard_normal((1, 2, 4, 6))
    x, xt = dg.tensor(xa, requires_grad=True), torch.tensor(xa, requires_grad=True)
    (g,) = dg.autograd.grad(F.interpolate(x, mode="bicubic", **kw).pow(3).sum(), [x], create_graph=True)
    (gt,) = torch.autograd.grad(TF.interpolate(xt, mode="bicubic", **kw).pow(3).sum(), [xt], create_graph=True)
    g.square().sum().backward()
    gt.square().sum().backward()
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kw", [dict(mode="bicubic", size=(5, 3)), dict(mode="bicubic", size=(2, 2), align_corners=True),
                                dict(mode="bicubic", size=(2, 5), antialias=True),
                                dict(mode="bilinear", size=(5, 2), antialias=True)])  # fmt: skip
def test_gradcheck(kw):
    x = dg.tensor(np.random.default_rng(9).standard_normal((1, 2, 4, 4)), requires_grad=True)
    assert dg.autograd.gradcheck(lambda a: F.interpolate(a, **kw), [x])


def torch_forward_matrix(shape, kw):
    """torch's forward as an (outputs, inputs) matrix: its output for each one-hot input."""
    n = int(np.prod(shape))
    return TF.interpolate(torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape), **kw).reshape(n, -1).T.numpy()


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((5, 6), dict(mode="bicubic", scale_factor=(1.15, 1.1))),  # torch's backward copies
        ((4, 4), dict(mode="bicubic", scale_factor=1.2, recompute_scale_factor=False)),
        ((3, 6), dict(mode="bilinear", scale_factor=(2.0, 1.011), antialias=True)),  # its backward resamples W
        ((6, 5), dict(mode="bicubic", scale_factor=(0.45, 1.1), antialias=True)),
    ],
)
def test_gradient_is_the_adjoint_of_torch_forward(shape, kw):
    """Where torch's backward disagrees with its forward, the gradient is the forward's transpose applied to
    the seed (the forward matches torch's, and torch's gradient here does not)."""
    x = np.random.default_rng(10).standard_normal((1, 1, *shape))
    out = check(lambda a: F.interpolate(a, **kw), lambda a: TF.interpolate(a, **kw), x, grad=False)
    xt, xd = torch.tensor(x, requires_grad=True), dg.tensor(x, requires_grad=True)
    seed = np.random.default_rng(11).standard_normal(tuple(out.shape))
    F.interpolate(xd, **kw).backward(dg.tensor(seed))
    TF.interpolate(xt, **kw).backward(torch.tensor(seed))
    expected = torch_forward_matrix(shape, kw).T @ seed.reshape(-1)
    np.testing.assert_allclose(xd.grad.numpy().reshape(-1), expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(xt.grad.numpy().reshape(-1), expected)  # still torch's behaviour


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape,size", [((6, 4), (3, 1)), ((5, 1), (9, 1))])
def test_antialias_to_width_one_is_torch_transposed(shape, size, mode):
    """torch's antialias forward repeats its first output row here; the transposed problem (width resized,
    height 1) it gets right, and its gradient is right too: both are matched."""
    x = np.random.default_rng(12).standard_normal((2, 2, *shape))
    kw = dict(mode=mode, antialias=True)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = F.interpolate(xd, size=size, **kw)
    want = TF.interpolate(torch.tensor(x).transpose(2, 3), size=size[::-1], **kw).transpose(2, 3)
    np.testing.assert_allclose(out.detach().numpy(), want.numpy(), rtol=1e-7, atol=1e-10)
    seed = np.random.default_rng(13).standard_normal(tuple(out.shape))
    out.backward(dg.tensor(seed))
    TF.interpolate(xt, size=size, **kw).backward(torch.tensor(seed))
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)


ANTIALIAS_REFUSED = [
    ((1, 2, 3, 4), dict(mode="nearest")),
    ((1, 2, 3, 4), dict(mode="nearest-exact")),
    ((1, 2, 3, 4), dict(mode="area")),
    ((1, 2, 5), dict(mode="linear")),
    ((1, 2, 3, 4, 5), dict(mode="trilinear")),
    ((1, 2, 3, 4, 5), dict(mode="nearest")),
]


@pytest.mark.parametrize("shape,kw", ANTIALIAS_REFUSED)
def test_antialias_outside_bilinear_and_bicubic_on_4d_is_refused_as_torch(shape, kw):
    with pytest.raises(ValueError, match="Anti-alias option is restricted"):
        TF.interpolate(torch.ones(shape), size=2, antialias=True, **kw)
    with pytest.raises(
        ValueError, match=r"interpolate: antialias=True is restricted to the modes bilinear and bicubic"
    ):
        F.interpolate(dg.ones(*shape), size=2, antialias=True, **kw)


@pytest.mark.parametrize("shape", [(1, 2, 3), (1, 2, 3, 4, 5)])
def test_bicubic_needs_4d_input(shape):
    with pytest.raises(NotImplementedError):  # torch: "Input Error: Only 3D, 4D and 5D input ..."
        TF.interpolate(torch.ones(shape), size=2, mode="bicubic")
    with pytest.raises(ShapeError, match=rf"interpolate: mode 'bicubic' needs 4-D input, got \({', '.join(map(str, shape))}\)"):  # fmt: skip
        F.interpolate(dg.ones(*shape), size=2, mode="bicubic")
    with pytest.raises(ValueError, match="antialias"):  # antialias is refused first, as torch
        F.interpolate(dg.ones(*shape), size=2, mode="bicubic", antialias=True)


def test_bicubic_refuses_what_torch_refuses():
    with pytest.raises(ValueError, match="align_corners"):
        TF.interpolate(torch.ones(1, 1, 2, 2), size=3, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="align_corners can only be set with the modes linear, bilinear, bicubic"):
        F.interpolate(dg.ones(1, 1, 2, 2), size=3, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="recompute_scale_factor"):
        F.interpolate(dg.ones(1, 1, 2, 2), size=3, mode="bicubic", recompute_scale_factor=True)
    with pytest.raises(ShapeError, match=r"\(0, 0\)"):
        F.interpolate(dg.ones(1, 1, 2, 2), scale_factor=0.3, mode="bicubic", antialias=True)


def test_upsample_module_bicubic_matches_torch():
    dm, tm = dg.nn.Upsample(scale_factor=1.5, mode="bicubic"), torch.nn.Upsample(scale_factor=1.5, mode="bicubic")
    assert repr(dm) == repr(tm)
    check(dm, tm, np.random.default_rng(14).standard_normal((1, 2, 3, 5)))
