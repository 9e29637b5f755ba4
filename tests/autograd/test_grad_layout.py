"""The layout of the gradients handed to the user, against torch: a leaf's new `.grad` keeps the leaf's
strides where the leaf is dense, else is row-major (torch's AccumulateGrad), and autograd.grad's results
are laid out as the inputs' (torch's rules compute them so), so `.view` works where torch's does.
float64, in the engine's fast mode and under create_graph."""

import warnings

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

_RNG = np.random.default_rng(0)


def _pair(shape, make=lambda t, x: x):
    """The same leaf in torch and distgraph: float64, from one draw, made by `make(lib, tensor)`."""
    a = _RNG.standard_normal(shape)
    return make(torch, torch.tensor(a)).requires_grad_(), make(dg, dg.tensor(a)).requires_grad_()


def _conv(lib):
    return lambda x: lib.nn.functional.conv2d(x, lib.ones(4, 3, 3, 3, dtype=lib.float64), padding=1)


CASES = {  # name: (leaf shape, how the leaf is made, lib -> the function of it)
    "conv_input": ((2, 3, 6, 6), None, _conv),
    "transpose_matmul": ((5, 3), None, lambda lib: lambda x: x.t() @ lib.ones(5, 4, dtype=lib.float64)),
    "permute": ((2, 3, 4), None, lambda lib: lambda x: x.permute(2, 0, 1) * 2),
    "pad": ((2, 3, 4, 4), None, lambda lib: lambda x: lib.nn.functional.pad(x, (1, 2, 1, 1)) ** 2),
    "avg_pool2d_padded": ((2, 3, 4, 4), None, lambda lib: lambda x: lib.nn.functional.avg_pool2d(x, 3, padding=1)),
    "channels_last_leaf": (
        (2, 3, 4, 4),
        lambda lib, x: x.contiguous(memory_format=lib.channels_last),
        lambda lib: lambda x: x * 2,
    ),
    "transposed_leaf_matmul": (
        (4, 3),
        lambda lib, x: x.t(),
        lambda lib: lambda x: x @ lib.ones(4, 2, dtype=lib.float64),
    ),
    "sliced_leaf": ((4, 6), lambda lib, x: x[:, ::2], lambda lib: lambda x: x * 2),
}


def _leaves(name):
    shape, make, _ = CASES[name]
    return _pair(shape, make or (lambda lib, x: x))


@pytest.mark.parametrize("name", CASES)
def test_new_grad_has_torchs_strides_and_views(name):
    tx, dx = _leaves(name)
    for lib, x in ((torch, tx), (dg, dx)):
        CASES[name][2](lib)(x).sum().backward()
    assert dx.grad.stride() == tx.grad.stride()
    assert dx.grad.is_contiguous() == tx.grad.is_contiguous()
    np.testing.assert_allclose(dx.grad.array, tx.grad.numpy(), rtol=1e-12)
    if tx.grad.is_contiguous():
        dx.grad.view(-1)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name", [n for n in CASES if n != "channels_last_leaf"])  # (torch: the rule's own)
def test_autograd_grad_result_has_torchs_strides(name, create_graph):
    tx, dx = _leaves(name)
    got = {}
    for lib, x in ((torch, tx), (dg, dx)):
        y = CASES[name][2](lib)(x)
        (got[lib],) = lib.autograd.grad(y, x, lib.ones_like(y), create_graph=create_graph)
    assert got[dg].stride() == got[torch].stride()
    np.testing.assert_allclose(got[dg].array, got[torch].detach().numpy(), rtol=1e-12)


def test_conv_grads_view_and_keep_their_history():
    """The issue's example: conv's weight .grad views as (-1,), and a create_graph input gradient views
    as (N, -1) with its history kept: the double backward through it matches torch's."""
    w = _RNG.standard_normal((4, 3, 3, 3))
    x = _RNG.standard_normal((2, 3, 8, 8))
    out = {}
    for lib in (torch, dg):
        weight = lib.tensor(w).requires_grad_()
        xi = lib.tensor(x).requires_grad_()
        d = lib.nn.functional.conv2d(xi, weight)
        d.sum().backward(retain_graph=True)
        flat = weight.grad.view(-1)
        weight.grad = None
        (g,) = lib.autograd.grad(d, xi, lib.ones_like(d), create_graph=True)
        (g.view(g.size(0), -1) ** 2).sum().backward()
        out[lib] = flat, weight.grad
    np.testing.assert_allclose(out[dg][0].array, out[torch][0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(out[dg][1].array, out[torch][1].numpy(), rtol=1e-12)
    assert out[dg][1].stride() == out[torch][1].stride()


def test_create_graph_grad_keeps_the_leafs_layout():
    """Under create_graph a new .grad is a recorded copy in the leaf's layout, still differentiable."""
    a, w = _RNG.standard_normal((5, 3)), _RNG.standard_normal((5, 4))
    got = {}
    for lib in (torch, dg):
        x = lib.tensor(a).requires_grad_()
        ((x.t() @ lib.tensor(w)) ** 2).sum().backward(create_graph=True)
        (gg,) = lib.autograd.grad((x.grad.view(-1) ** 2).sum(), x)
        got[lib] = x.grad.stride(), gg
    assert got[dg][0] == got[torch][0]
    np.testing.assert_allclose(got[dg][1].array, got[torch][1].numpy(), rtol=1e-12)


def test_padded_gradient_lets_go_of_the_padded_buffer():
    """pad's gradient is a view into the padded one: the .grad copies it, holding no more than its own."""
    x = dg.tensor(_RNG.standard_normal((2, 3, 4, 4))).requires_grad_()
    dg.nn.functional.pad(x, (1, 2, 1, 1)).sum().backward()
    root = x.grad.array
    while root.base is not None:
        root = root.base
    assert root.nbytes == x.grad.array.nbytes


def test_accumulation_keeps_the_existing_grads_layout_and_identity():
    """A later gradient is added into the existing .grad in place, whatever its layout (torch's rule)."""
    for lib in (torch, dg):
        x = lib.tensor(_RNG.standard_normal((3, 5))).requires_grad_()
        x.grad = lib.zeros(5, 3, dtype=lib.float64).t()
        before = x.grad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch's: the .grad's layout is not the leaf's)
            (x.t() @ lib.ones(3, 2, dtype=lib.float64)).sum().backward()
        assert x.grad is before
        assert x.grad.stride() == (1, 3)
        assert float(x.grad.sum()) == 30.0


def test_hook_result_is_copied_into_the_leafs_layout():
    for lib in (torch, dg):
        x = lib.tensor(_RNG.standard_normal((3, 4))).requires_grad_()
        x.register_hook(lambda g: g.t().contiguous().t())
        (x * 2).sum().backward()
        assert x.grad.stride() == (4, 1)
        x.grad.view(-1)
