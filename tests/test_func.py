"""distgraph.func against torch.func in float64: grad/grad_and_value (argnums, has_aux, dict arguments),
vjp, jacrev, jacfwd, hessian, functional_call (restores the module, also on error), and vmap (in_dims,
out_dims, nesting, randomness, differentiability), with torch's errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from tests.parity import to_torch

torch = pytest.importorskip("torch")
tf = torch.func

RNG = np.random.default_rng(0)
A, B, C = RNG.standard_normal((3, 4)), RNG.standard_normal(4), RNG.standard_normal((5, 3, 4))


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t.detach().__array__())


def _assert_tree(d, t):
    if isinstance(t, tuple | list):
        assert type(d) is type(t) and len(d) == len(t)
        for a, b in zip(d, t):
            _assert_tree(a, b)
    elif isinstance(t, dict):
        assert isinstance(d, dict) and d.keys() == t.keys()
        for k in t:
            _assert_tree(d[k], t[k])
    else:
        assert tuple(d.shape) == tuple(t.shape)
        np.testing.assert_allclose(_np(d), _np(t), rtol=1e-10, atol=1e-12)


def _both(*arrays):
    d = tuple(dg.tensor(a) for a in arrays)
    return d, tuple(to_torch(t) for t in d)


SCALAR_FNS = {
    "elementwise": lambda x, y: (x.sin() * y.exp()).sum(),
    "matmul": lambda x, y: ((x @ y).tanh() ** 2).sum(),
    "reduction": lambda x, y: x.mean() * y.max(),
}


@pytest.mark.parametrize("name", SCALAR_FNS)
@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0), -1])
def test_grad_matches_torch(name, argnums):
    fn = SCALAR_FNS[name]
    d, t = _both(A, B)
    _assert_tree(dg.func.grad(fn, argnums)(*d), tf.grad(fn, argnums)(*t))
    _assert_tree(dg.func.grad_and_value(fn, argnums)(*d), tf.grad_and_value(fn, argnums)(*t))


def test_grad_has_aux_and_dict_argument():
    fn = lambda p, x: ((x @ p["w"] + p["b"]).sum(), {"n": x.sum()})  # noqa: E731
    d, t = _both(RNG.standard_normal((4, 2)), RNG.standard_normal(2), A)
    dp, tp = {"w": d[0], "b": d[1]}, {"w": t[0], "b": t[1]}
    _assert_tree(dg.func.grad(fn, has_aux=True)(dp, d[2]), tf.grad(fn, has_aux=True)(tp, t[2]))


def test_nested_grad_gives_second_derivative():
    f = lambda x: (x**3).sin()  # noqa: E731
    d, t = _both(np.array(0.7))
    _assert_tree(dg.func.grad(dg.func.grad(f))(d[0]), tf.grad(tf.grad(f))(t[0]))


def test_grad_result_differentiable_to_outer_graph():
    x = dg.tensor(B, requires_grad=True)
    tx = to_torch(x)
    dg.func.grad(lambda v: (v**3).sum())(x).sum().backward()
    tf.grad(lambda v: (v**3).sum())(tx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())


def test_grad_results_do_not_require_grad_for_plain_inputs():
    d, _ = _both(A, B)
    assert not dg.func.grad(SCALAR_FNS["matmul"])(*d).requires_grad


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda x: dg.func.grad(lambda v: v * 2)(x),
            "Expected f\\(\\*args\\) to return a scalar Tensor, got tensor with 1 dims",
        ),
        (lambda x: dg.func.grad(lambda v: 3.0)(x), "Expected f\\(\\*args\\) to return a Tensor, got <class 'float'>"),
        (lambda x: dg.func.grad(lambda v: v.sum(), argnums=1)(x), "Got argnum=1, but only 1 positional inputs"),
        (lambda x: dg.func.grad(lambda v: v.sum(), argnums=())(x), "argnums must be non-empty"),
        (lambda x: dg.func.grad(lambda v, w: v.sum(), argnums=(0, 0))(x, x), "argnums elements must be unique"),
        (lambda x: dg.func.grad(lambda v: v.sum(), has_aux=True)(x), "output of function f should be a tuple"),
    ],
)
def test_grad_errors_read_as_torch(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(dg.tensor(B))


def test_vjp_matches_torch_and_can_be_called_twice():
    fn = lambda x, y: ((x @ y).exp(), x.sum(0) * y)  # noqa: E731
    d, t = _both(A, B)
    out_d, vjp_d = dg.func.vjp(fn, *d)
    out_t, vjp_t = tf.vjp(fn, *t)
    _assert_tree(out_d, out_t)
    ct_d, ct_t = _both(RNG.standard_normal(3), RNG.standard_normal(4))
    for _ in range(2):
        _assert_tree(vjp_d(ct_d), vjp_t(ct_t))
    with pytest.raises(RuntimeError, match="Expected pytree structure of cotangents"):
        vjp_d(ct_d[0])


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jacobians_match_torch(jac):
    fn = lambda x, y: ((x @ y).sin(), (x * x).sum(1), y.exp())  # noqa: E731
    d, t = _both(A, B)
    for argnums in (0, 1, (0, 1)):
        _assert_tree(getattr(dg.func, jac)(fn, argnums)(*d), getattr(tf, jac)(fn, argnums)(*t))


def test_hessian_matches_torch():
    fn = lambda x, y: ((x @ y).tanh() ** 2).sum() + (y**3).sum()  # noqa: E731
    d, t = _both(A, B)
    for argnums in (0, 1, (0, 1)):
        _assert_tree(dg.func.hessian(fn, argnums)(*d), tf.hessian(fn, argnums)(*t))


def _mlp():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(dg.float64)


def test_functional_call_uses_given_tensors_and_restores():
    m = _mlp()
    originals = dict(m.named_parameters())
    new = {k: v.detach() * 2 for k, v in originals.items()}
    x = dg.tensor(A)
    out = dg.func.functional_call(m, new, (x,))
    ref = ((x @ new["0.weight"].T + new["0.bias"]).tanh()) @ new["2.weight"].T + new["2.bias"]
    np.testing.assert_allclose(out.numpy(), ref.numpy())
    assert all(p is originals[k] for k, p in m.named_parameters())


def test_functional_call_restores_on_error_and_strict_keys():
    m = _mlp()
    originals = dict(m.named_parameters())
    with pytest.raises(Exception):
        dg.func.functional_call(
            m, {"0.weight": dg.zeros(3, 4, dtype=dg.float64)}, (dg.tensor(RNG.standard_normal((2, 5))),)
        )
    assert all(p is originals[k] for k, p in m.named_parameters())
    with pytest.raises(
        RuntimeError, match=r"Error\(s\) in reparametrizing for Sequential:\n\tUnexpected key\(s\): 'nope'"
    ):
        dg.func.functional_call(m, {"nope": dg.zeros(1)}, (dg.tensor(A),), strict=True)
    with pytest.raises(ValueError, match="appeared in multiple dictionaries"):
        dg.func.functional_call(m, ({"0.bias": dg.zeros(3)}, {"0.bias": dg.zeros(3)}), (dg.tensor(A),))


def test_grad_through_functional_call_matches_torch_per_example():
    """Per-example gradients: vmap(grad(loss of functional_call)), as torch's tutorial does."""
    m = _mlp()
    tm = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    tm.load_state_dict({k: torch.from_numpy(v.detach().numpy().copy()) for k, v in m.state_dict().items()})
    p = {k: v.detach() for k, v in m.named_parameters()}
    tp = {k: v.detach() for k, v in tm.named_parameters()}

    def loss(mod, fc):
        return lambda params, x: (fc(mod, params, (x,)) ** 2).sum()

    got = dg.vmap(dg.func.grad(loss(m, dg.func.functional_call)), in_dims=(None, 0))(p, dg.tensor(A))
    want = torch.vmap(tf.grad(loss(tm, tf.functional_call)), in_dims=(None, 0))(tp, torch.tensor(A))
    _assert_tree(got, want)


VMAP_CASES = {
    "matmul_unmapped_second": (lambda x, y: x @ y, (0, None), 0, (A, B)),
    "dim1": (lambda x: x.sum(0), 1, 0, (A,)),
    "negative_dims": (lambda x: x * 2, -1, -1, (A,)),
    "out_dim1": (lambda x: x.exp(), 0, 1, (C,)),
    "tuple_out_dims": (lambda x: (x * 2, x.sum()), 1, (1, 0), (A,)),
    "nested_in_dims": (lambda p, z: p[0] * p[1] + z, ((0, 1), None), 0, ((A, A.T.copy()), 2.0)),
    "out_none": (lambda x, y: (x + y, y * 2), (0, None), (0, None), (A, B)),
}


@pytest.mark.parametrize("name", VMAP_CASES)
def test_vmap_matches_torch(name):
    fn, in_dims, out_dims, args = VMAP_CASES[name]

    def conv(a, lib):
        if isinstance(a, tuple):
            return tuple(conv(v, lib) for v in a)
        if isinstance(a, np.ndarray):
            return dg.tensor(a) if lib == "dg" else torch.tensor(a)
        return a

    got = dg.vmap(fn, in_dims, out_dims)(*conv(args, "dg"))
    want = torch.vmap(fn, in_dims, out_dims)(*conv(args, "torch"))
    _assert_tree(got, want)


def test_nested_vmap_matches_torch():
    fn = lambda x, y: (x * y).sum()  # noqa: E731
    d, t = _both(A, RNG.standard_normal((5, 4)))
    inner = lambda a, b: dg.vmap(fn, (None, 0))(a, b)  # noqa: E731
    tinner = lambda a, b: torch.vmap(fn, (None, 0))(a, b)  # noqa: E731
    _assert_tree(dg.vmap(inner, (0, None))(*d), torch.vmap(tinner, (0, None))(*t))


def test_vmap_is_differentiable():
    x, w = dg.tensor(A, requires_grad=True), dg.tensor(B, requires_grad=True)
    tx, tw = to_torch(x), to_torch(w)
    dg.vmap(lambda r, v: (r * v).sin().sum(), (0, None))(x, w).pow(2).sum().backward()
    torch.vmap(lambda r, v: (r * v).sin().sum(), (0, None))(tx, tw).pow(2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())


def test_vmap_randomness():
    x = dg.zeros(4, 3, dtype=dg.float64)
    with pytest.raises(RuntimeError, match="vmap: called random operation while in randomness error mode"):
        dg.vmap(lambda r: r + dg.rand(3, dtype=dg.float64))(x)
    same = dg.vmap(lambda r: r + dg.rand(3, dtype=dg.float64), randomness="same")(x).numpy()
    assert np.all(same == same[0]) and not np.all(same == 0)
    diff = dg.vmap(lambda r: r + dg.rand(3, dtype=dg.float64), randomness="different")(x).numpy()
    assert not np.all(diff == diff[0])
    with pytest.raises(RuntimeError, match="Only allowed values for randomness are 'error', 'different', or 'same'"):
        dg.vmap(lambda r: r, randomness="x")


@pytest.mark.parametrize(
    "call, err, match",
    [
        (
            lambda: dg.vmap(lambda x: x, in_dims=(0, 0))(dg.tensor(A)),
            ValueError,
            "in_dims is not compatible with the structure",
        ),
        (lambda: dg.vmap(lambda x: x, in_dims=[0])(dg.tensor(A)), ValueError, "expected `in_dims` to be int or a"),
        (lambda: dg.vmap(lambda x: x)(), ValueError, "got no inputs"),
        (
            lambda: dg.vmap(lambda x: x, in_dims=2)(dg.tensor(A)),
            ValueError,
            "expected in_dim to satisfy -2 <= in_dim < 2",
        ),
        (
            lambda: dg.vmap(lambda x, y: x, in_dims=(0, 0))(dg.tensor(A), 3.0),
            ValueError,
            "We cannot vmap over non-Tensor",
        ),
        (
            lambda: dg.vmap(lambda x, y: x, in_dims=(0, 0))(dg.tensor(A), dg.tensor(B)),
            ValueError,
            "got sizes \\[3, 4\\]",
        ),
        (
            lambda: dg.vmap(lambda x: x, in_dims=(None,))(dg.tensor(A)),
            ValueError,
            "Expected at least one Tensor to vmap over",
        ),
        (
            lambda: dg.vmap(lambda x: x, out_dims=None)(dg.tensor(A)),
            ValueError,
            "can not return a BatchedTensor when out_dim is None",
        ),
        (
            lambda: dg.vmap(lambda x: 3.0)(dg.tensor(A)),
            ValueError,
            "must only return Tensors, got type <class 'float'>",
        ),
        (
            lambda: dg.vmap(lambda x: x, out_dims=3)(dg.tensor(A)),
            IndexError,
            r"expected to be in range of \[-2, 1\], but got 3",
        ),
        (lambda: dg.vmap(lambda x: x, out_dims="a")(dg.tensor(A)), ValueError, "`out_dims` must be an int, None"),
        (lambda: dg.vmap(lambda x: x, chunk_size=0), ValueError, "chunk_size should be None or greater than 0"),
    ],
)
def test_vmap_errors_read_as_torch(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v(lambda x: x, in_dims=(0, 0)),
        lambda v: v(lambda x: x, in_dims=2),
        lambda v: v(lambda x: x, out_dims=None),
        lambda v: v(lambda x: x, out_dims=3),
    ],
)
def test_vmap_errors_have_torch_types(call):
    """The same misuse raises the same exception class in both libraries."""
    with pytest.raises(Exception) as te:
        call(torch.vmap)(torch.tensor(A))
    with pytest.raises(te.type):
        call(dg.vmap)(dg.tensor(A))


def test_wiring():
    import distgraph.autograd.functional
    import distgraph.utils.checkpoint

    assert dg.vmap is dg.func.vmap
    assert dg.autograd.functional.jacobian is distgraph.autograd.functional.jacobian
    assert dg.utils.checkpoint.checkpoint is distgraph.utils.checkpoint.checkpoint
