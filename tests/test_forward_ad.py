"""torch.autograd.forward_ad (dual tensors, tangents by double backward) and torch.func.linearize, checked
against torch in float64: tangents of elementwise, matmul, softmax, MLP, several duals, a dual used twice,
an in-place op on a result and nested helpers; their gradients (forward-over-reverse) through the parity
helper; what has no tangent; the cache; torch's errors; no_grad refused; linearize's values and errors."""

import contextlib

import numpy as np
import pytest

import distgraph as dg
import distgraph.autograd.forward_ad as dg_fwad
from tests.parity import check

torch = pytest.importorskip("torch")
th_fwad = torch.autograd.forward_ad
rng = np.random.default_rng(0)

FWAD = {dg: dg_fwad, torch: th_fwad}
W = rng.standard_normal((3, 3))


def _layer(m, x, w):
    return m.tanh(x @ w)


def _inplace_on_result(m, x):
    if m is torch:  # its out-of-place twin: torch's first in-place op on a dual costs seconds (a lazy import)
        return x * x + x.sin()
    y = x * x
    y.add_(x.sin())
    return y


FUNCS = {  # name: (f(m, *args), arrays, how many of the first arrays are made duals)
    "elementwise": (lambda m, x: m.sin(x) * m.exp(x) + x**3, (rng.standard_normal((2, 3)),), 1),
    "matmul_two_duals": (lambda m, a, b: a @ b, (rng.standard_normal((2, 3)), rng.standard_normal((3, 4))), 2),
    "softmax": (lambda m, x: m.nn.functional.softmax(x, dim=-1), (rng.standard_normal((2, 5)),), 1),
    "dual_used_twice": (lambda m, x: x * x + m.tanh(x), (rng.standard_normal(4),), 1),
    "inplace_on_result": (_inplace_on_result, (rng.standard_normal(4),), 1),
    "nested_helpers_and_a_plain_argument": (
        lambda m, x, w: _layer(m, _layer(m, x, w), w.T),
        (rng.standard_normal((2, 3)), W),
        1,
    ),
}


def _primal_and_tangent(f, m, n_duals, tangents):
    """f as a function of its arguments whose output is (primal, tangent) of f at them, the first n_duals
    arguments made duals with `tangents`."""

    def run(*args):
        fwad = FWAD[m]
        with fwad.dual_level():
            duals = [fwad.make_dual(a, m.tensor(t)) for a, t in zip(args[:n_duals], tangents)]
            return tuple(fwad.unpack_dual(f(m, *duals, *args[n_duals:])))

    return run


@pytest.mark.parametrize("grad", [False, True], ids=["plain_inputs", "inputs_requiring_grad"])
@pytest.mark.parametrize("name", FUNCS)
def test_tangent_and_its_gradient_match_torch(name, grad):
    """Values, requires_grad of primal and tangent, and (grad) each input's gradient through both."""
    if name == "softmax" and grad:
        pytest.skip("torch 2.13 cannot backward through its own softmax tangent (its jvp changes an output in place)")
    f, arrays, n_duals = FUNCS[name]
    tangents = [rng.standard_normal(a.shape) for a in arrays[:n_duals]]
    check(
        _primal_and_tangent(f, dg, n_duals, tangents),
        _primal_and_tangent(f, torch, n_duals, tangents),
        *arrays,
        grad=grad,
    )


def test_mlp_tangent_and_weight_gradients_match_torch():
    """nn.Linear + tanh: the tangent depends on the weights, and backward through it reaches them. (torch's
    reference is its autograd.functional.jvp with create_graph: its forward AD of a dual plus a tensor that
    requires grad imports torch._dynamo, seconds.)"""
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    nets = {m: m.nn.Sequential(m.nn.Linear(3, 5), m.nn.Tanh(), m.nn.Linear(5, 2)).double() for m in (dg, torch)}
    nets[dg].load_state_dict({k: dg.tensor(v.numpy()) for k, v in nets[torch].state_dict().items()})
    with dg_fwad.dual_level():
        primal, tangent = dg_fwad.unpack_dual(nets[dg](dg_fwad.make_dual(dg.tensor(x), dg.tensor(t))))
    want_primal, want = torch.autograd.functional.jvp(nets[torch], torch.tensor(x), torch.tensor(t), create_graph=True)
    for got, ref in ((primal, want_primal), (tangent, want)):
        assert got.requires_grad
        np.testing.assert_allclose(got.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    (primal.sum() + (tangent**2).sum()).backward()
    (want_primal.sum() + (want**2).sum()).backward()
    for a, b in zip(nets[dg].parameters(), nets[torch].parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_unpack_of_the_dual_gives_the_tangent_given_and_a_primal_without_grad():
    x, t = dg.tensor(rng.standard_normal(3)), dg.tensor(rng.standard_normal(3))
    with dg_fwad.dual_level():
        dual = dg_fwad.make_dual(x, t)
        unpacked = dg_fwad.unpack_dual(dual)
        assert type(unpacked).__name__ == "UnpackedDualTensor" and unpacked.tangent is t
        assert not unpacked.primal.requires_grad and np.array_equal(unpacked.primal.numpy(), x.numpy())
        assert dg_fwad.unpack_dual(unpacked.primal).tangent is None


def test_backward_through_a_dual_reaches_the_leaf_it_was_made_of():
    w = dg.tensor(rng.standard_normal(3), requires_grad=True)
    with dg_fwad.dual_level():
        (dg_fwad.make_dual(w, dg.ones(3, dtype=dg.float64)).sin() * 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.cos(w.detach().numpy()))


def test_what_has_no_tangent():
    """Outside any level, unrelated to the duals, integer results, after the level exits: None, as torch."""
    x, t = dg.tensor(rng.standard_normal(3)), dg.tensor(rng.standard_normal(3))
    assert dg_fwad.unpack_dual(x) == (x, None)
    with dg_fwad.dual_level():
        dual = dg_fwad.make_dual(x, t)
        y = dual.exp()
        unrelated = dg.tensor(rng.standard_normal(3), requires_grad=True) * 2
        for z in (x * 2, unrelated, dual > 0, dual.argmax()):
            assert dg_fwad.unpack_dual(z).tangent is None
        assert dg_fwad.unpack_dual(dual, level=3).tangent is None
        np.testing.assert_allclose(dg_fwad.unpack_dual(dual.round()).tangent.numpy(), 0)
    assert dg_fwad.unpack_dual(y).tangent is None


def test_unpack_is_cached_until_the_tensor_changes_in_place():
    x, t = dg.tensor(rng.standard_normal(3)), dg.tensor(rng.standard_normal(3))
    with dg_fwad.dual_level():
        y = dg_fwad.make_dual(x, t) * 2
        first = dg_fwad.unpack_dual(y).tangent
        assert dg_fwad.unpack_dual(y).tangent is first
        y.mul_(3)
        np.testing.assert_allclose(dg_fwad.unpack_dual(y).tangent.numpy(), 6 * t.numpy())


def test_no_grad_inside_a_level_is_refused_saying_why():
    """Ops under no_grad record no graph for the trick to go through (torch's tangents still flow there)."""
    x, t = dg.tensor(rng.standard_normal(3)), dg.tensor(rng.standard_normal(3))
    with dg_fwad.dual_level():
        dual = dg_fwad.make_dual(x, t)
        y = dual.sin()
        with dg.no_grad():
            with pytest.raises(RuntimeError, match="no autograd graph and grad mode is off.*no_grad"):
                dg_fwad.unpack_dual(dual * 2)
            tangent = dg_fwad.unpack_dual(y).tangent  # a graph recorded before: fine, without a graph of its own
    assert not tangent.requires_grad
    np.testing.assert_allclose(tangent.numpy(), np.cos(x.numpy()) * t.numpy())


def test_a_level_is_left_when_its_block_raises():
    with pytest.raises(KeyError):
        with dg_fwad.dual_level():
            raise KeyError
    assert dg_fwad.enter_dual_level() == 0
    dg_fwad.exit_dual_level(level=0)


ERRORS = {  # name: (inside a level, fn(m, fwad, x, t))
    "make_dual_without_level": (False, lambda m, fw, x, t: fw.make_dual(x, t)),
    "exit_without_level": (False, lambda m, fw, x, t: fw.exit_dual_level()),
    "exit_of_another_level": (True, lambda m, fw, x, t: fw.exit_dual_level(level=5)),
    "nested_level": (True, lambda m, fw, x, t: fw.enter_dual_level()),
    "make_dual_at_another_level": (True, lambda m, fw, x, t: fw.make_dual(x, t, level=5)),
    "tangent_of_another_shape": (True, lambda m, fw, x, t: fw.make_dual(x, t[:2])),
    "integer_primal": (True, lambda m, fw, x, t: fw.make_dual(m.arange(3), t)),
    "integer_tangent": (True, lambda m, fw, x, t: fw.make_dual(x, m.arange(3))),
    "dual_of_a_dual": (True, lambda m, fw, x, t: fw.make_dual(fw.make_dual(x, t), t)),
    "dual_of_a_result_with_a_tangent": (True, lambda m, fw, x, t: fw.make_dual(fw.make_dual(x, t).sin(), t)),
    "unpack_of_a_non_tensor": (True, lambda m, fw, x, t: fw.unpack_dual(3.0)),
}


@pytest.mark.parametrize("name", ERRORS)
def test_errors_are_torchs(name):
    inside, fn = ERRORS[name]
    raised = {}
    for m, fw in FWAD.items():
        x, t = m.tensor(np.ones(3)), m.tensor(np.ones(3))
        with fw.dual_level() if inside else contextlib.nullcontext():
            with pytest.raises(Exception) as info:
                fn(m, fw, x, t)
        raised[m] = info
    want = raised[torch]
    assert issubclass(raised[dg].type, want.type)
    assert str(raised[dg].value) == str(want.value).replace("torch.", "distgraph.").replace(
        "_unpack_dual", "unpack_dual"
    )


LINEARIZE = {  # name: (f(m, *args), arrays)
    "elementwise": (lambda m, x: m.sin(x) * m.exp(x), (rng.standard_normal((2, 3)),)),
    "matmul_and_a_dict_output": (
        lambda m, a, b: {"p": m.tanh(a @ b), "s": (a.sum(),)},
        (rng.standard_normal((2, 3)), rng.standard_normal((3, 4))),
    ),
}


@pytest.mark.parametrize("name", LINEARIZE)
def test_linearize_matches_torchs_jvp_for_each_tangent(name):
    """torch.func.linearize(f, *p)[1](*t) is torch.func.jvp(f, p, t)[1] (checked against jvp: linearize's
    first call in torch traces with make_fx, seconds)."""
    f, arrays = LINEARIZE[name]
    out, jvp_fn = dg.func.linearize(lambda *a: f(dg, *a), *map(dg.tensor, arrays))
    for _ in range(2):  # one graph, several tangents
        tangents = [rng.standard_normal(a.shape) for a in arrays]
        want_out, want = torch.func.jvp(
            lambda *a: f(torch, *a), tuple(map(torch.tensor, arrays)), tuple(map(torch.tensor, tangents))
        )
        got = jvp_fn(*map(dg.tensor, tangents))
        for a, b in ((out, want_out), (got, want)):
            for d, t in zip(*(dg.func.pytree.flatten(v)[0] for v in (a, b))):
                assert not d.requires_grad
                np.testing.assert_allclose(d.numpy(), t.numpy(), rtol=1e-10, atol=1e-12)


def test_linearize_keeps_the_graph_to_a_closure_weight():
    w_np, x_np, t_np = (rng.standard_normal(3) for _ in range(3))
    w, tw = dg.tensor(w_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    _, jvp_fn = dg.func.linearize(lambda x: dg.sin(x * w), dg.tensor(x_np))
    jvp_fn(dg.tensor(t_np)).sum().backward()
    # (torch.func's jvp of a closure over a tensor that requires grad imports torch._dynamo, seconds)
    fn = lambda x: torch.sin(x * tw)  # noqa: E731
    torch.autograd.functional.jvp(fn, torch.tensor(x_np), torch.tensor(t_np), create_graph=True)[1].sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    "tangents, match",  # torch 2.13's words
    [
        (
            (np.ones(4),),
            r"tangent:0 with shape torch.Size\(\[4\]\) in flattened pytree doesn't match the shape torch.Size\(\[3\]\)",
        ),
        (
            (np.ones(3, np.float32),),
            "tangent:0 with dtype distgraph.float32 in flattened pytree doesn't match the dtype",
        ),
        ((np.ones(3), np.ones(3)), r"Expected the tangents \(\*, \*\) to have the same argspec as the primals \(\*,\)"),
    ],
    ids=["shape", "dtype", "count"],
)
def test_linearize_refuses_tangents_unlike_the_primals(tangents, match):
    _, jvp_fn = dg.func.linearize(dg.sin, dg.tensor(np.ones(3)))
    with pytest.raises(RuntimeError, match=match):
        jvp_fn(*map(dg.tensor, tangents))
