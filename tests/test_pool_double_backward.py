"""Double backward through the pools against torch, in float64.

torch's pooling backward ops take the forward input `self` as an input of derivative zeros_like(self):
after `g, = grad(pool(x).sum(), x, create_graph=True)`, g requires grad and `grad((g * g).sum(), x)` is
zeros (not an error; not None when g also depends on a weight). The pools' rules tie their gradient to
the input the same way (pool.tied), so here: the flag and the zeros (shape, dtype, an inf in x), the
second gradients of a pool after a conv (x's and the weight's), the first-order gradients unchanged, and
the ops torch itself refuses to differentiate twice (interpolate nearest/bilinear, pixel_shuffle, unfold,
adaptive average pooling to one cell, which torch computes as a mean) still refusing."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")

SHAPES = {1: (2, 3, 16), 2: (2, 3, 8, 7), 3: (2, 3, 5, 4, 6)}

# name: (spatial dims, pool(F, x)), F being either library's functional namespace
POOLS = {
    "max_pool1d": (1, lambda F, x: F.max_pool1d(x, 3, 2, 1)),
    "avg_pool1d": (1, lambda F, x: F.avg_pool1d(x, 2)),
    "adaptive_avg_pool1d": (1, lambda F, x: F.adaptive_avg_pool1d(x, 5)),
    "adaptive_max_pool1d": (1, lambda F, x: F.adaptive_max_pool1d(x, 5)),
    "max_pool2d": (2, lambda F, x: F.max_pool2d(x, 2)),
    "max_pool2d_overlapping": (2, lambda F, x: F.max_pool2d(x, 3, 1, 1, ceil_mode=True)),
    "avg_pool2d": (2, lambda F, x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    "adaptive_avg_pool2d": (2, lambda F, x: F.adaptive_avg_pool2d(x, 3)),
    "adaptive_avg_pool2d_equal_windows": (2, lambda F, x: F.adaptive_avg_pool2d(x, (4, 7))),
    "adaptive_avg_pool2d_one_row": (2, lambda F, x: F.adaptive_avg_pool2d(x, (1, 3))),
    "adaptive_max_pool2d": (2, lambda F, x: F.adaptive_max_pool2d(x, 3)),
    "adaptive_max_pool2d_one_cell": (2, lambda F, x: F.adaptive_max_pool2d(x, 1)),
    "interpolate_area": (2, lambda F, x: F.interpolate(x, size=(3, 5), mode="area")),
    "max_pool3d": (3, lambda F, x: F.max_pool3d(x, 2)),
    "avg_pool3d": (3, lambda F, x: F.avg_pool3d(x, 3, 2, 1)),
    "adaptive_avg_pool3d": (3, lambda F, x: F.adaptive_avg_pool3d(x, (3, 2, 4))),
    "adaptive_avg_pool3d_equal_windows": (3, lambda F, x: F.adaptive_avg_pool3d(x, (5, 2, 3))),
    "adaptive_max_pool3d": (3, lambda F, x: F.adaptive_max_pool3d(x, 3)),
}

# torch differentiates these once only (adaptive averages to one cell are torch's mean)
REFUSED = {
    "interpolate_nearest": (2, lambda F, x: F.interpolate(x, scale_factor=2, mode="nearest")),
    "interpolate_bilinear": (2, lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear")),
    "pixel_shuffle": (2, lambda F, x: F.pixel_shuffle(x[:, :2].reshape(2, 8, 2, 7), 2)),
    "unfold": (2, lambda F, x: F.unfold(x, 2)),
    "adaptive_avg_pool1d_one_cell": (1, lambda F, x: F.adaptive_avg_pool1d(x, 1)),
    "adaptive_avg_pool2d_one_cell": (2, lambda F, x: F.adaptive_avg_pool2d(x, 1)),
    "adaptive_avg_pool3d_one_cell": (3, lambda F, x: F.adaptive_avg_pool3d(x, 1)),
}


def lib_of(name):
    return (torch, torch.tensor, torch.nn.functional) if name == "torch" else (dg, dg.tensor, dg.nn.functional)


def numpy_of(t):
    return None if t is None else t.detach().numpy()


def first_order(name, pool, xa, create_graph):
    lib, T, F = lib_of(name)
    x = T(xa, requires_grad=True)
    (g,) = lib.autograd.grad(pool(F, x).sum(), x, create_graph=create_graph)
    return x, g


def second_order(name, pool, xa):
    """g = d pool(x).sum() / dx with create_graph; then (g.requires_grad, d (g·g).sum() / dx)."""
    lib = lib_of(name)[0]
    x, g = first_order(name, pool, xa, True)
    if not g.requires_grad:
        return False, None
    (gx,) = lib.autograd.grad((g * g).sum(), x)
    return True, numpy_of(gx)


def through_conv(name, dims, pool, xa, wa, squared):
    """y = pool(conv(x, w)); g = dL/dx with create_graph (L = y.sum() or (y·y).sum()); the second gradients
    of (g·g).sum() for x and w, and g itself."""
    lib, T, F = lib_of(name)
    x, w = T(xa, requires_grad=True), T(wa, requires_grad=True)
    y = pool(F, getattr(F, f"conv{dims}d")(x, w, padding=1))
    (g,) = lib.autograd.grad((y * y).sum() if squared else y.sum(), x, create_graph=True)
    gx, gw = lib.autograd.grad((g * g).sum(), (x, w), allow_unused=True)
    return numpy_of(g), numpy_of(gx), numpy_of(gw)


def data(dims, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(SHAPES[dims]), rng.standard_normal((4, 3, *(3,) * dims))


@pytest.mark.parametrize("case", POOLS)
def test_pooling_alone_gives_zeros_as_torch(case):
    dims, pool = POOLS[case]
    xa, _ = data(dims)
    theirs, ours = second_order("torch", pool, xa), second_order("distgraph", pool, xa)
    assert theirs[0] and ours[0]  # the gradient requires grad, as torch's
    assert ours[1].shape == theirs[1].shape == xa.shape and ours[1].dtype == theirs[1].dtype == np.float64
    assert not theirs[1].any() and not ours[1].any()
    assert not np.signbit(ours[1]).any()


@pytest.mark.parametrize("case", POOLS)
def test_pooling_after_a_conv_matches_torch(case):
    """The second gradients for x (zeros for a sum, a real one for a sum of squares) and the weight."""
    dims, pool = POOLS[case]
    xa, wa = data(dims, 1)
    for squared in (False, True):
        theirs = through_conv("torch", dims, pool, xa, wa, squared)
        ours = through_conv("distgraph", dims, pool, xa, wa, squared)
        for a, b in zip(ours, theirs):
            assert a is not None and b is not None
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        if not squared:
            assert not ours[1].any()  # x's second gradient: zeros, not None


@pytest.mark.parametrize("case", POOLS)
def test_first_order_gradients_unchanged(case):
    dims, pool = POOLS[case]
    xa, _ = data(dims, 2)
    _, theirs = first_order("torch", pool, xa, False)
    _, plain = first_order("distgraph", pool, xa, False)
    _, graphed = first_order("distgraph", pool, xa, True)
    assert not plain.requires_grad and not theirs.requires_grad
    np.testing.assert_allclose(plain.numpy(), numpy_of(theirs), rtol=1e-12, atol=1e-12)
    assert np.array_equal(plain.numpy().view(np.uint64), numpy_of(graphed).view(np.uint64))  # the same bits
    x = dg.tensor(xa, requires_grad=True)
    pool(dg.nn.functional, x).sum().backward()
    assert np.array_equal(x.grad.numpy().view(np.uint64), plain.numpy().view(np.uint64))


@pytest.mark.parametrize("case", POOLS)
def test_an_inf_input_gives_zeros_not_nan(case):
    dims, pool = POOLS[case]
    xa, _ = data(dims, 3)
    xa.flat[[0, 7, 20]] = [np.inf, -np.inf, np.inf]
    with np.errstate(invalid="ignore"):  # the forward's inf - inf (the values do not matter here)
        theirs, ours = second_order("torch", pool, xa), second_order("distgraph", pool, xa)
    assert ours[0] and theirs[0]
    assert not np.isnan(ours[1]).any() and not ours[1].any() and not theirs[1].any()


def test_the_third_order_goes_through():
    """A gradient of the tied gradient, with create_graph again: the pools' double-backward ops follow."""
    xa, wa = data(2, 4)
    results = []
    for name in ("torch", "distgraph"):
        lib, T, F = lib_of(name)
        x, w = T(xa, requires_grad=True), T(wa, requires_grad=True)
        y = F.max_pool2d(F.conv2d(x, w, padding=1), 3, 2, 1)
        (g,) = lib.autograd.grad((y * y).sum(), x, create_graph=True)
        (gw,) = lib.autograd.grad((g * g).sum(), w, create_graph=True)
        (gx,) = lib.autograd.grad((gw * gw).sum(), x)
        results.append((numpy_of(gw), numpy_of(gx)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", REFUSED)
def test_ops_torch_refuses_still_refuse(case):
    dims, fn = REFUSED[case]
    xa, _ = data(dims, 5)
    theirs, ours = second_order("torch", fn, xa), second_order("distgraph", fn, xa)
    assert theirs == (False, None) and ours == (False, None)
    x, g = first_order("distgraph", fn, xa, True)
    with pytest.raises(AutogradError, match="does not require grad"):
        dg.autograd.grad((g * g).sum(), x)
