"""autograd.functional against torch.autograd.functional in float64: values of jacobian, hessian, vjp,
jvp, vhp, hvp on elementwise, matmul, reduction and multi-input/multi-output functions, create_graph
for higher orders, strict mode and torch's errors."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.autograd.functional as AF
from tests.parity import to_torch

torch = pytest.importorskip("torch")
TF = torch.autograd.functional

RNG = np.random.default_rng(0)
A, B, W = RNG.standard_normal((3, 4)), RNG.standard_normal(4), RNG.standard_normal((4, 2))

FUNCS = {  # name: (fn taking either library's tensors, inputs)
    "elementwise": (lambda x: x.sin() * x.exp(), (B,)),
    "matmul": (lambda x, w: x @ w, (A, W)),
    "reduction": (lambda x: (x * x).sum(1), (A,)),
    "multi_out": (lambda x, y: ((x @ y).tanh(), (x * x).mean(0), y.exp()), (A, B)),
}
SCALAR = {
    "cubic": (lambda x: (x**3).sum(), (B,)),
    "two_inputs": (lambda x, y: ((x @ y) ** 2).sum() + x.sin().sum(), (A, B)),
}


def _pair(arrays, requires_grad=False):
    d = tuple(dg.tensor(a, requires_grad=requires_grad) for a in arrays)
    return d, tuple(to_torch(t) for t in d)


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t.detach().__array__())


def _assert_tree(d, t):
    if isinstance(t, tuple):
        assert isinstance(d, tuple) and len(d) == len(t)
        for a, b in zip(d, t):
            _assert_tree(a, b)
        return
    assert tuple(d.shape) == tuple(t.shape)
    np.testing.assert_allclose(_np(d), _np(t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("as_tuple", [True, False])
def test_jacobian_matches_torch(name, as_tuple):
    fn, arrays = FUNCS[name]
    d, t = _pair(arrays)
    if len(arrays) == 1 and not as_tuple:
        d, t = d[0], t[0]
    _assert_tree(AF.jacobian(fn, d), TF.jacobian(fn, t))
    _assert_tree(AF.jacobian(fn, d, vectorize=True), TF.jacobian(fn, t, vectorize=True))


@pytest.mark.parametrize("name", SCALAR)
def test_hessian_vhp_hvp_match_torch(name):
    fn, arrays = SCALAR[name]
    d, t = _pair(arrays)
    _assert_tree(AF.hessian(fn, d), TF.hessian(fn, t))
    v = tuple(RNG.standard_normal(a.shape) for a in arrays)
    dv, tv = _pair(v)
    for op in ("vhp", "hvp"):
        _assert_tree(getattr(AF, op)(fn, d, dv), getattr(TF, op)(fn, t, tv))


@pytest.mark.parametrize("name", FUNCS)
def test_vjp_and_jvp_match_torch(name):
    fn, arrays = FUNCS[name]
    d, t = _pair(arrays)
    outs = fn(*t)
    outs = outs if isinstance(outs, tuple) else (outs,)
    v_out = tuple(RNG.standard_normal(tuple(o.shape)) for o in outs)
    dvo, tvo = _pair(v_out)
    if len(outs) == 1:
        dvo, tvo = dvo[0], tvo[0]
    _assert_tree(AF.vjp(fn, d, dvo), TF.vjp(fn, t, tvo))
    dvi, tvi = _pair(tuple(RNG.standard_normal(a.shape) for a in arrays))
    _assert_tree(AF.jvp(fn, d, dvi), TF.jvp(fn, t, tvi))


def test_results_are_detached_without_create_graph():
    x = dg.tensor(B, requires_grad=True)
    out, g = AF.vjp(lambda x: (x**2).sum(), x)
    assert not out.requires_grad and not g.requires_grad
    assert not AF.jacobian(lambda x: x.exp(), x).requires_grad


@pytest.mark.parametrize("op", ["jacobian", "hessian"])
def test_create_graph_gives_higher_order_gradients(op):
    """d/dx of sum(jacobian(f)(x)) and of sum(hessian(g)(x)) through create_graph, as torch."""
    fn = (lambda x: x.sin() * x) if op == "jacobian" else (lambda x: (x.exp() * x).sum())
    x = dg.tensor(B, requires_grad=True)
    tx = to_torch(x)
    res = getattr(AF, op)(fn, x, create_graph=True)
    assert res.requires_grad
    res.sum().backward()
    getattr(TF, op)(fn, tx, create_graph=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)


def test_hvp_create_graph_third_order():
    fn = lambda x: (x**4).sum()  # noqa: E731
    x, v = dg.tensor(B, requires_grad=True), dg.tensor(A[0])
    tx, tv = to_torch(x), to_torch(v)
    AF.hvp(fn, x, v, create_graph=True)[1].sum().backward()
    TF.hvp(fn, tx, tv, create_graph=True)[1].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)


def test_unused_input_gives_zeros_or_strict_error():
    fn = lambda x, y: x * 2  # noqa: E731
    d, t = _pair((B, B))
    _assert_tree(AF.jacobian(fn, d), TF.jacobian(fn, t))
    with pytest.raises(RuntimeError, match="Output 0 of the user-provided function is independent of input 1"):
        AF.jacobian(fn, d, strict=True)
    with pytest.raises(RuntimeError, match="independent of input 1. This is not allowed in strict mode"):
        AF.vjp(fn, d, dg.tensor(B), strict=True)


def test_strict_refuses_constant_output():
    with pytest.raises(RuntimeError, match="Output 0 of the user-provided function does not require gradients"):
        AF.vjp(lambda x: dg.ones(4), dg.tensor(B), dg.tensor(B), strict=True)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: AF.vjp(lambda x: x * 2, dg.tensor(B)), "v can only be None if the user-provided function returns"),
        (lambda: AF.jvp(lambda x: x * 2, dg.tensor(B)), "v can only be None if the input to the user-provided"),
        (lambda: AF.vjp(lambda x: x * 2, dg.tensor(B), dg.tensor(A)), r"v has invalid size: should be \(4,\)"),
        (
            lambda: AF.vjp(lambda x, y: (x, y), (dg.tensor(B), dg.tensor(B)), (dg.tensor(B),)),
            "v is a tuple of invalid length: should be 2 but got 1",
        ),
        (lambda: AF.hessian(lambda x: x * 2, dg.tensor(B)), "should contain a single element"),
        (lambda: AF.hvp(lambda x: (x, x), dg.tensor(B), dg.tensor(B)), "hvp should return a single Tensor"),
        (lambda: AF.jacobian(lambda x: x, dg.tensor(B), strict=True, vectorize=True), "not supported together"),
    ],
)
def test_errors_read_as_torch(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def test_non_tensor_inputs_and_strategy_errors():
    with pytest.raises(TypeError, match="The inputs given to jacobian must be either a Tensor or a tuple of Tensors"):
        AF.jacobian(lambda x: x, [1.0])
    with pytest.raises(TypeError, match="the value at index 1 has type"):
        AF.vjp(lambda x, y: x, (dg.tensor(B), 3.0))
    with pytest.raises(
        NotImplementedError,
        match="forward-AD or forward-over-reverse Hessian is ?only implemented for `vectorize=True`",
    ):
        AF.jacobian(lambda x: x, dg.tensor(B), strategy="forward-mode")
    forward = AF.jacobian(lambda x: x.sin(), dg.tensor(B), strategy="forward-mode", vectorize=True)
    np.testing.assert_allclose(forward.numpy(), AF.jacobian(lambda x: x.sin(), dg.tensor(B)).numpy())
    with pytest.raises(AssertionError, match="Expected strategy"):
        AF.jacobian(lambda x: x, dg.tensor(B), strategy="sideways")


def test_caller_graph_is_untouched():
    """The function runs on fresh inputs: the caller's tensor keeps no .grad and its graph stays usable."""
    x = dg.tensor(B, requires_grad=True)
    y = x * 3
    AF.jacobian(lambda t: t.exp(), y)
    assert x.grad is None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(4, 3.0))
