"""Fractional max pooling against torch: with the same `_random_samples`, outputs and indices equal torch's
exactly (float64 and float32, where the interval formula rounds in float32), the gradient reaches the same
max positions; random shapes, kernels and output sizes (0 and 1 included), batched and unbatched, ties and
NaN windows, output_ratio, the modules (state dict, repr), finite differences, and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import AutogradError, DTypeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF, TN = torch.nn.functional, torch.nn


def _fns(dims, **kw):
    name = f"fractional_max_pool{dims}d"
    return getattr(F, name), getattr(TF, name)


def _draw(rng, dims):
    """A random case: kernel, input shape (with or without batch), an output size torch accepts, samples."""
    kernel = tuple(int(k) for k in rng.integers(1, 4, dims))
    sizes = [k + int(rng.integers(0, 6)) + (dims == 3) for k in kernel]  # torch's 3-d check is strict
    out = tuple(int(rng.integers(0, s - k + 2 - (dims == 3))) for s, k in zip(sizes, kernel))
    lead = (int(rng.integers(1, 3)),) if rng.random() < 0.7 else ()
    c = int(rng.integers(1, 4))
    x = rng.standard_normal((*lead, c, *sizes))
    if rng.random() < 0.4:  # ties within windows (as after a ReLU): torch's pick is the first maximum
        x = np.maximum(np.round(x), 0)
    samples = rng.random(((lead or (1,))[0] + int(rng.integers(0, 2)), c, dims))  # more rows than the batch: fine
    return kernel, out, x, samples


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_matches_torch_values_indices_and_gradient(dims, seed):
    rng = np.random.default_rng(seed)
    kernel, out, x, samples = _draw(rng, dims)
    fn, tfn = _fns(dims)
    for dtype, tol in ((np.float64, 0.0), (np.float32, 0.0)):  # exact: the same elements are picked
        u = samples.astype(dtype)
        check(lambda a: fn(a, kernel, out, return_indices=True, _random_samples=dg.tensor(u)),
              lambda a: tfn(a, kernel, out, return_indices=True, _random_samples=torch.tensor(u)),
              x, dtype=dtype, rtol=tol, atol=tol)  # fmt: skip


def _near_steps(size, k, out):
    """float32 samples at and beside each u where (i + u)·α is a whole number: the truncation's steps."""
    alpha, near = (size - k) / (out - 1), []
    for i in range(out - 1):
        for m in range(size):
            if 0 <= m / alpha - i < 1:
                f = np.float32(m / alpha - i)
                near += [np.nextafter(f, np.float32(-1)), f, np.nextafter(f, np.float32(2))]
    return np.array(near, dtype=np.float32)


@pytest.mark.parametrize("dims,size,k,out", [(2, 23, 2, 20), (3, 10, 2, 4)])
def test_float32_intervals_round_in_float32_as_aten(dims, size, k, out):
    """Samples on the truncation steps: ATen computes the starts in float32, and for some of these they
    differ from float64's (so computing them in float64 would fail this test)."""
    fn, tfn = _fns(dims)
    u = np.repeat(_near_steps(size, k, out)[None, :, None], dims, axis=2)  # (1, C, dims)
    x = np.random.default_rng(7).standard_normal((1, u.shape[1]) + (size,) * dims).astype(np.float32)
    _, idx = fn(dg.tensor(x), k, out, _random_samples=dg.tensor(u), return_indices=True)
    _, want = tfn(torch.tensor(x), k, out, _random_samples=torch.tensor(u), return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), want.numpy())
    _, idx64 = fn(dg.tensor(x.astype(np.float64)), k, out, _random_samples=dg.tensor(u.astype(np.float64)),
                  return_indices=True)  # fmt: skip
    assert (idx64.numpy() != want.numpy()).any(), "no sample here tells float32's rounding from float64's"


@pytest.mark.parametrize("dims", [2, 3])
def test_nan_windows_pick_the_last_nan_and_all_minus_inf_the_first(dims):
    fn, tfn = _fns(dims)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3) + (6,) * dims)
    x[0, 0, 1:3] = np.nan
    x[1, 2] = -np.inf
    x[0, 1, 0] = -0.0
    u = rng.random((2, 3, dims))
    check(lambda a: fn(a, 2, 4, return_indices=True, _random_samples=dg.tensor(u)),
          lambda a: tfn(a, 2, 4, return_indices=True, _random_samples=torch.tensor(u)), x)  # fmt: skip


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("ratio", [0.5, (0.3, 0.75, 0.6)])
def test_output_ratio_and_the_with_indices_names(dims, ratio):
    fn, tfn = _fns(dims)
    """A number as output_ratio is every dim's, as torch documents (its 2-d functional calls len() on it, a
    TypeError; its module passes a pair): torch is given the tuple."""
    ratio = ratio if isinstance(ratio, float) else ratio[:dims]
    whole = (ratio,) * dims if isinstance(ratio, float) else ratio
    x = np.random.default_rng(9).standard_normal((2, 2) + (7,) * dims)
    u = np.random.default_rng(10).random((2, 2, dims))
    check(lambda a: fn(a, 2, output_ratio=ratio, _random_samples=dg.tensor(u)),
          lambda a: tfn(a, 2, output_ratio=whole, _random_samples=torch.tensor(u)), x)  # fmt: skip
    with_indices = getattr(F, f"fractional_max_pool{dims}d_with_indices")
    t_with_indices = getattr(TF, f"fractional_max_pool{dims}d_with_indices")
    check(lambda a: with_indices(a, 3, 4, None, False, dg.tensor(u)),
          lambda a: t_with_indices(a, 3, 4, None, False, torch.tensor(u)), x)  # fmt: skip


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcheck_and_overlapping_windows_accumulate(dims):
    """Windows overlap (kernel 3, 5 outputs of 7 or 8): a shared maximum collects every window's gradient."""
    fn, _ = _fns(dims)
    rng = np.random.default_rng(11)
    u = dg.tensor(rng.random((1, 2, dims)))
    x = dg.tensor(rng.standard_normal((1, 2) + (7 + (dims == 3),) * dims), requires_grad=True)
    assert dg.autograd.gradcheck(lambda a: fn(a, 3, 5, _random_samples=u), [x])
    fn(x, 3, 5, _random_samples=u).sum().backward()
    assert x.grad.numpy().max() > 1  # some element is the maximum of several windows


def test_without_samples_draws_from_distgraphs_generator():
    x = dg.tensor(np.random.default_rng(12).standard_normal((2, 3, 9, 9)))
    dg.manual_seed(5)
    a, ia = F.fractional_max_pool2d(x, 2, 4, return_indices=True)
    dg.manual_seed(5)
    u = dg.rand(2, 3, 2, dtype=x.dtype)
    b, ib = F.fractional_max_pool2d(x, 2, 4, return_indices=True, _random_samples=u)
    np.testing.assert_array_equal(ia.numpy(), ib.numpy())
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    out = F.fractional_max_pool3d(dg.tensor(np.zeros((3, 5, 5, 5))), 2, output_ratio=0.5)  # unbatched
    assert tuple(out.shape) == (3, 2, 2, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_modules_match_torch(dims):
    name = f"FractionalMaxPool{dims}d"
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3) + (8,) * dims)
    u = rng.random((2, 3, dims))
    dm = getattr(nn, name)(2, output_size=5, return_indices=True, _random_samples=dg.tensor(u))
    tm = getattr(TN, name)(2, output_size=5, return_indices=True, _random_samples=torch.tensor(u))
    assert repr(dm) == repr(tm) == f"{name}()"
    assert list(dm.state_dict()) == list(tm.state_dict()) == ["_random_samples"]
    assert (dm.kernel_size, dm.output_size, dm.output_ratio) == (tm.kernel_size, tm.output_size, tm.output_ratio)
    check(dm, tm, x)
    dm, tm = getattr(nn, name)(3, output_ratio=0.5), getattr(TN, name)(3, output_ratio=0.5)
    assert list(dm.state_dict()) == list(tm.state_dict()) == []
    assert dm.output_ratio == tm.output_ratio == (0.5,) * dims
    assert tuple(dm(dg.tensor(x)).shape) == tuple(tm(torch.tensor(x)).shape)


def test_module_errors_match_torch():
    cases = [
        (lambda lib: lib.FractionalMaxPool2d(2), "FractionalMaxPool2d requires specifying either an output size"),
        (lambda lib: lib.FractionalMaxPool3d(2, 2, 0.5), "only one of output_size and output_ratio"),
        (lambda lib: lib.FractionalMaxPool2d(2, output_ratio=(0.5, 1.0)), "output_ratio must be between 0 and 1"),
        (lambda lib: lib.FractionalMaxPool3d((1, 0, 1), output_ratio=0.5), "kernel_size must be greater than 0"),
    ]
    for make, msg in cases:
        for lib in (nn, TN):
            with pytest.raises(ValueError, match=msg):
                make(lib)


def test_functional_errors_name_the_op_as_torch():
    x = dg.tensor(np.zeros((2, 3, 7, 8)))
    y = dg.tensor(np.zeros((2, 3, 5, 6, 7)))
    u = lambda *s, dt=np.float64: dg.tensor(np.zeros(s, dt))  # noqa: E731
    cases = [
        (ValueError, "fractional_max_pool2d requires specifying either an output_size or an output_ratio",
         lambda: F.fractional_max_pool2d(x, 3)),
        (ValueError, "fractional_max_pool2d requires output_ratio to either be a single Int or tuple of Ints",
         lambda: F.fractional_max_pool2d(x, 3, output_ratio=(0.5, 0.5, 0.5))),
        (ShapeError, "fractional_max_pool2d: kernel_size must be an int or a pair of ints",
         lambda: F.fractional_max_pool2d(x, (3, 3, 3), 2)),
        (ShapeError, "fractional_max_pool3d: output_size must be an int or a tuple of 3 ints",
         lambda: F.fractional_max_pool3d(y, 2, (2, 2))),
        (ShapeError, "fractional_max_pool2d: kernel_size must be positive", lambda: F.fractional_max_pool2d(x, 0, 2)),
        (ShapeError, "fractional_max_pool2d: output_size must be ≥ 0", lambda: F.fractional_max_pool2d(x, 2, -1)),
        (ShapeError, r"fractional_max_pool2d\(\): Expected 3D or 4D tensor, but got: \[7, 8\]",
         lambda: F.fractional_max_pool2d(x[0, 0], 2, 2)),
        (ShapeError, r"fractional_max_pool3d_out\(\): Expected 4D or 5D tensor, but got: \[6, 7\]",
         lambda: F.fractional_max_pool3d(y[0, 0, 0], 2, 2)),
        (ShapeError, r"non-zero size for non-batch dimensions, but got \[2, 3, 0, 8\] with dimension 2 being empty",
         lambda: F.fractional_max_pool2d(x[:, :, :0], 2, 2)),
        (ShapeError, r"fractional_max_pool2d\(\): pool height 3 too large relative to input height 7",
         lambda: F.fractional_max_pool2d(x, 3, (6, 2))),
        (ShapeError, r"fractional_max_pool2d\(\): pool width 3 too large relative to input width 8",
         lambda: F.fractional_max_pool2d(x, 3, (5, 7))),
        (ShapeError, r"fractional_max_pool3d_out\(\): pool time 2 too large relative to input time 5",
         lambda: F.fractional_max_pool3d(y, 2, (4, 2, 2))),
        (ShapeError, r"fractional_max_pool3d_out\(\): pool width 2 too large relative to input width 7",
         lambda: F.fractional_max_pool3d(y, 2, (3, 4, 6))),
        (DTypeError, "fractional_max_pool2d: expected a floating point input, got int64",
         lambda: F.fractional_max_pool2d(x.long(), 2, 2)),
        (DTypeError, "Expect _random_samples to have the same dtype as input",
         lambda: F.fractional_max_pool2d(x, 2, 2, _random_samples=u(2, 3, 2, dt=np.float32))),
        (ShapeError, "Expect _random_samples to have 3 dimensions, got 2",
         lambda: F.fractional_max_pool2d(x, 2, 2, _random_samples=u(3, 2))),
        (ShapeError, r"Expect _random_samples.size\(0\) no less then input batch size",
         lambda: F.fractional_max_pool2d(x, 2, 2, _random_samples=u(1, 3, 2))),
        (ShapeError, r"Expect _random_samples.size\(1\) equals to input channel size",
         lambda: F.fractional_max_pool2d(x, 2, 2, _random_samples=u(2, 2, 2))),
        (ShapeError, r"Expect _random_samples.size\(2\) equals to 3; got 2",
         lambda: F.fractional_max_pool3d(y, 2, 2, _random_samples=u(2, 3, 2))),
        (AutogradError, "not differentiable with respect to argument 'random_samples'",
         lambda: F.fractional_max_pool2d(x, 2, 2, _random_samples=dg.tensor(np.zeros((2, 3, 2)), requires_grad=True))),
    ]  # fmt: skip
    for err, msg, call in cases:
        with pytest.raises(err, match=msg):
            call()
    with dg.no_grad():  # torch takes samples that require grad when no graph is built
        F.fractional_max_pool2d(x, 2, 2, _random_samples=dg.tensor(np.zeros((2, 3, 2)), requires_grad=True))


def test_empty_outputs_and_batches_as_torch():
    fn = F.fractional_max_pool2d
    for shape, out in [((2, 3, 7, 8), (0, 3)), ((0, 3, 7, 8), 2), ((0, 5, 6), 1)]:
        x = np.random.default_rng(14).standard_normal(shape)
        u = np.random.default_rng(15).random((max(shape[0], 1) if len(shape) == 4 else 1, shape[-3], 2))
        check(lambda a: fn(a, 2, out, return_indices=True, _random_samples=dg.tensor(u)),
              lambda a: TF.fractional_max_pool2d(a, 2, out, return_indices=True, _random_samples=torch.tensor(u)),
              x)  # fmt: skip
