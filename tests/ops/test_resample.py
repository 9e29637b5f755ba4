"""interpolate, pixel_shuffle/unshuffle, unfold/fold and F.pad against torch in float64, on seeded random
shapes and arguments (values and input gradients), their modules (Upsample, padding, Fold/Unfold, pixel
shuffles) and the errors for arguments torch refuses."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from tests.parity import check

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional
LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}


def interpolate_case(rng):
    """Mode, input shape and keyword arguments; scale factors keep every output dim non-empty."""
    nd = int(rng.integers(3, 6))
    mode = str(rng.choice(["nearest", "nearest-exact", LINEAR[nd]] + (["area"] if nd < 5 else [])))
    shape = (2, 2, *(int(v) for v in rng.integers(1, 7, nd - 2)))
    kw = {"mode": mode}
    if mode == LINEAR[nd]:
        kw["align_corners"] = bool(rng.integers(2))
    if rng.integers(2):
        sizes = tuple(int(v) for v in rng.integers(1, 12, nd - 2))
        kw["size"] = sizes if rng.integers(2) or len(set(sizes)) > 1 else sizes[0]
    else:
        low = [1.0 / n for n in shape[2:]]  # floor(n·scale) >= 1
        kw["scale_factor"] = tuple(float(np.round(rng.uniform(max(lo, 0.3), 3.5), 2)) + 0.001 for lo in low)
        if rng.integers(2):
            kw["recompute_scale_factor"] = bool(rng.integers(2))
    return shape, kw


def torch_backward_disagrees(shape, kw):
    """torch 2.13's 1-D and 3-D 'nearest' forward scales by 1/scale_factor even where the output is the
    input's size or twice it, but their backward then copies or halves indices (as the 2-D kernels do
    both ways): its gradient is not the adjoint of its forward. See test_nearest_gradient_is_the_adjoint."""
    scales = kw.get("scale_factor")
    if kw["mode"] != "nearest" or len(shape) == 4 or scales is None or kw.get("recompute_scale_factor"):
        return False
    return any(int(n * s) in (n, 2 * n) and s not in (1, 2) for n, s in zip(shape[2:], scales))


@pytest.mark.parametrize("seed", range(60))
def test_interpolate_random_arguments_match_torch(seed, device):
    rng = np.random.default_rng(seed)
    shape, kw = interpolate_case(rng)
    grad = not torch_backward_disagrees(shape, kw)
    check(
        lambda x: F.interpolate(x, **kw),
        lambda x: TF.interpolate(x, **kw),
        rng.standard_normal(shape),
        grad=grad,
        device=device,
    )


@pytest.mark.parametrize("shape,scale", [((1, 1, 6), 2.03), ((1, 1, 6), 1.11), ((1, 1, 1, 1, 3), (1.0, 1.0, 2.2))])
def test_nearest_gradient_is_the_adjoint_of_torch_forward(shape, scale):
    """Where torch's own backward disagrees with its forward, the gradient adds each output's seed to the
    input its forward read (torch's forward gives the source indices of an arange input)."""
    n = int(np.prod(shape))
    source = TF.interpolate(torch.arange(n, dtype=torch.float64).reshape(shape), scale_factor=scale).numpy().astype(int)
    seed = np.random.default_rng(9).standard_normal(source.shape)
    x = dg.zeros(*shape, dtype=dg.float64, requires_grad=True)
    F.interpolate(x, scale_factor=scale).backward(dg.tensor(seed))
    expected = np.zeros(n)
    np.add.at(expected, source.reshape(-1), seed.reshape(-1))
    np.testing.assert_allclose(x.grad.numpy().reshape(-1), expected, rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6)])  # the 2-D and 1-D kernels index differently
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear"])
@pytest.mark.parametrize(
    "scale", [2, 3, 0.5, 1.7, 2.03, 1.11]
)  # exact multiples and scales where float32 rounding shows
def test_interpolate_scale_factors_pick_torch_source_pixels(shape, mode, scale):
    if mode == "bilinear" and len(shape) == 2:  # its 1-D form
        mode = "linear"
    x = np.random.default_rng(2).standard_normal((1, *shape))
    grad = not torch_backward_disagrees(x.shape, {"mode": mode, "scale_factor": (scale,) * len(shape[1:])})
    check(lambda a: F.interpolate(a, scale_factor=scale, mode=mode), lambda a: TF.interpolate(a, scale_factor=scale, mode=mode), x, grad=grad)  # fmt: skip


def test_interpolate_double_backward_matches_torch():
    xa = np.random.default_rng(4).standard_normal((1, 2, 4, 3))
    x, xt = dg.tensor(xa, requires_grad=True), torch.tensor(xa, requires_grad=True)
    (g,) = dg.autograd.grad(F.interpolate(x, size=(7, 5), mode="bilinear").pow(3).sum(), [x], create_graph=True)
    (gt,) = torch.autograd.grad(TF.interpolate(xt, size=(7, 5), mode="bilinear").pow(3).sum(), [xt], create_graph=True)
    g.square().sum().backward()
    gt.square().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("seed", range(20))
def test_pixel_shuffle_and_unshuffle_match_torch(seed):
    rng = np.random.default_rng(seed)
    r = int(rng.integers(1, 4))
    lead = tuple(int(v) for v in rng.integers(1, 3, int(rng.integers(0, 3))))
    c, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    check(
        lambda x: F.pixel_shuffle(x, r), lambda x: TF.pixel_shuffle(x, r), rng.standard_normal((*lead, c * r * r, h, w))
    )
    check(
        lambda x: F.pixel_unshuffle(x, r),
        lambda x: TF.pixel_unshuffle(x, r),
        rng.standard_normal((*lead, c, h * r, w * r)),
    )


def window_case(rng):
    k, d, s = (tuple(int(v) for v in rng.integers(1, hi, 2)) for hi in (4, 3, 4))
    p = tuple(int(rng.integers(0, 3)) for _ in range(2))
    size = tuple(max(1, di * (ki - 1) + 1 - 2 * pi) + int(rng.integers(0, 6)) for ki, di, pi in zip(k, d, p))
    return size, dict(kernel_size=k, dilation=d, padding=p, stride=s)


@pytest.mark.parametrize("seed", range(40))
def test_unfold_and_fold_random_arguments_match_torch(seed, device):
    rng = np.random.default_rng(seed)
    size, kw = window_case(rng)
    lead = (int(rng.integers(1, 3)),) if rng.integers(4) else ()  # unbatched now and then
    x = rng.standard_normal((*lead, int(rng.integers(1, 4)), *size))
    cols = check(lambda a: F.unfold(a, **kw), lambda a: TF.unfold(a, **kw), x, device=device)
    back = rng.standard_normal(tuple(cols.shape))
    check(lambda a: F.fold(a, size, **kw), lambda a: TF.fold(a, size, **kw), back, device=device)


def test_unfold_fold_double_backward_matches_torch():
    xa = np.random.default_rng(6).standard_normal((2, 2, 5, 4))
    x, xt = dg.tensor(xa, requires_grad=True), torch.tensor(xa, requires_grad=True)
    kw = dict(kernel_size=(2, 3), padding=1, stride=(2, 1))
    (g,) = dg.autograd.grad(F.fold(F.unfold(x, **kw).pow(3), (5, 4), **kw).sum(), [x], create_graph=True)
    (gt,) = torch.autograd.grad(TF.fold(TF.unfold(xt, **kw).pow(3), (5, 4), **kw).sum(), [xt], create_graph=True)
    g.square().sum().backward()
    gt.square().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-10)


def pad_case(rng):
    """torch's rule: a border mode pads the last 1, 2 or 3 dims of a 2-4, 3-5 or 4-5-D input; constant pads any."""
    mode = str(rng.choice(["constant", "reflect", "replicate", "circular"]))
    dims = int(rng.integers(1, 4))
    ndim = int(rng.integers(dims + 1, min(dims + 2, 5) + 1)) if mode != "constant" else int(rng.integers(dims, 5))
    shape = tuple(int(v) for v in rng.integers(1, 6, ndim))
    widths = []
    for n in reversed(shape[ndim - dims :]):  # last dim first
        most = {"reflect": n - 1, "circular": n}.get(mode, 4)
        low = -(n // 2) if mode in ("constant", "reflect") else 0  # torch refuses negative circular widths
        widths += [int(rng.integers(low, most + 1)), int(rng.integers(low, most + 1))]
    kw = {"mode": mode}
    if mode == "constant" and rng.integers(2):
        kw["value"] = float(rng.standard_normal())
    return shape, tuple(widths), kw


@pytest.mark.parametrize("seed", range(60))
def test_pad_random_modes_and_widths_match_torch(seed, device):
    rng = np.random.default_rng(seed)
    shape, widths, kw = pad_case(rng)
    x = rng.standard_normal(shape)
    out_shape = tuple(TF.pad(torch.from_numpy(x), widths, **kw).shape)
    if 0 in out_shape:  # cropped to nothing: torch's gradient of a border mode is then uninitialized memory
        xt = dg.tensor(x, device=device, requires_grad=True)
        out = F.pad(xt, widths, **kw)
        assert tuple(out.shape) == out_shape
        out.sum().backward()
        assert not np.any(xt.grad.cpu().numpy())
        return
    check(lambda x: F.pad(x, widths, **kw), lambda x: TF.pad(x, widths, **kw), x, device=device)


@pytest.mark.parametrize("widths", [(-2, 4), (3, -3), (-1, 3), (2, -1), (-2, -1)])
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_pad_with_a_negative_side_matches_torch(mode, widths):
    """torch mirrors reflect padding about the uncropped input: (-2, 4) of [0..4] is [2, 3, 4, 3, 2, 1, 0]."""
    x = np.random.default_rng(11).standard_normal((2, 5))
    check(lambda a: F.pad(a, widths, mode=mode), lambda a: TF.pad(a, widths, mode=mode), x)


MODULES = [
    ("ZeroPad1d", (2,), (2, 3, 4)),
    ("ZeroPad2d", ((1, 0, 2, 3),), (2, 3, 4)),
    ("ZeroPad3d", (1,), (1, 2, 2, 3, 2)),
    ("ConstantPad1d", ((0, 2), 1.5), (3, 4)),
    ("ConstantPad2d", (1, -0.5), (2, 2, 3, 3)),
    ("ConstantPad3d", ((1, 0, 0, 1, 2, 0), 2.0), (2, 2, 2, 3)),
    ("ReflectionPad1d", ((2, 1),), (2, 3, 4)),
    ("ReflectionPad2d", (2,), (1, 2, 3, 4)),
    ("ReflectionPad3d", (1,), (1, 2, 2, 3, 2)),
    ("ReplicationPad1d", (3,), (2, 4)),
    ("ReplicationPad2d", ((0, 1, 4, 2),), (2, 3, 4)),
    ("ReplicationPad3d", ((1, 2, 0, 1, 1, 0),), (2, 2, 3, 2)),
    ("CircularPad1d", ((1, 3),), (2, 3, 4)),
    ("CircularPad2d", (1,), (1, 2, 3, 4)),
    ("CircularPad3d", ((1, 0, 2, 1, 0, 1),), (1, 2, 2, 3, 2)),
    ("Upsample", (None, 2.0), (1, 2, 3, 4)),
    ("Upsample", ((5, 7), None, "bilinear", True), (1, 2, 3, 4)),
    ("Upsample", (None, (1.5,), "linear", False, True), (2, 3, 5)),
    ("UpsamplingNearest2d", ((5, 6),), (1, 2, 3, 4)),
    ("UpsamplingBilinear2d", (None, 3), (1, 2, 3, 4)),
    ("PixelShuffle", (2,), (1, 8, 2, 3)),
    ("PixelUnshuffle", (2,), (1, 2, 4, 6)),
    ("Unfold", ((2, 3), 1, 1, 2), (2, 3, 5, 6)),
    ("Fold", ((4, 5), 2, 1, 0, 1), (2, 8, 12)),
]


@pytest.mark.parametrize("name,args,shape", MODULES, ids=[m[0] for m in MODULES])
def test_modules_match_torch(name, args, shape, device):
    dm, tm = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(dm) == repr(tm)
    check(dm, tm, np.random.default_rng(8).standard_normal(shape), device=device)


ERRORS = [
    (lambda: F.pad(dg.ones(2, 3, 4), (4, 0), mode="reflect"), ["pad", "reflect", "(2, 3, 4)", "at most 3"]),
    (lambda: F.pad(dg.ones(2, 3, 4), (0, 5), mode="circular"), ["pad", "circular", "at most 4"]),
    (lambda: F.pad(dg.ones(2, 3), (1, 1), mode="wrap"), ["pad", "'wrap'"]),
    (
        lambda: F.pad(dg.ones(2, 3), (-2, -2), mode="reflect"),
        ["pad", "reflect", "(-2, -2)", "leaves nothing", "(2, 3)"],
    ),
    (lambda: nn.ReflectionPad2d((1, 2, 3)), ["ReflectionPad2d", "4 ints"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3, 4), size=(5, 6), scale_factor=2), ["interpolate", "size or scale_factor"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3, 4)), ["interpolate", "size or scale_factor"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3, 4), size=(5,)), ["interpolate", "(1, 2, 3, 4)", "2 ints"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3, 4), scale_factor=(2, 2, 2)), ["interpolate", "2 numbers"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3), size=4, mode="bilinear"), ["interpolate", "bilinear", "4-D", "(1, 2, 3)"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3), size=4, align_corners=True), ["interpolate", "align_corners"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3), size=4, recompute_scale_factor=True), ["recompute_scale_factor"]),
    (lambda: F.interpolate(dg.ones(1, 2, 3), scale_factor=0.2), ["interpolate", "(1, 2, 3)", "(0,)"]),
    (lambda: F.interpolate(dg.ones(2, 3), size=4), ["interpolate", "3-D, 4-D or 5-D", "(2, 3)"]),
    (lambda: F.pixel_shuffle(dg.ones(1, 5, 2, 2), 2), ["pixel_shuffle", "(1, 5, 2, 2)", "4"]),
    (lambda: F.pixel_unshuffle(dg.ones(1, 1, 3, 4), 2), ["pixel_unshuffle", "(1, 1, 3, 4)"]),
    (lambda: F.unfold(dg.ones(1, 1, 2, 2), 3), ["unfold", "(1, 1, 2, 2)", "(3, 3)"]),
    (lambda: F.unfold(dg.ones(1, 2), 1), ["unfold", "(1, 2)"]),
    (lambda: F.fold(dg.ones(1, 8, 5), (3, 3), 2), ["fold", "(1, 8, 5)", "2·2 blocks"]),
    (lambda: F.fold(dg.ones(1, 7, 4), (3, 3), 2), ["fold", "(1, 7, 4)"]),
]


@pytest.mark.parametrize("fn,words", ERRORS)
def test_bad_arguments_raise_errors_naming_the_op_and_shapes(fn, words):
    with pytest.raises(ValueError) as info:
        fn()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_unsupported_modes_say_so():
    with pytest.raises(NotImplementedError, match="interpolate: mode 'lanczos' is not supported"):
        F.interpolate(dg.ones(1, 1, 2, 2), size=3, mode="lanczos")
