"""torch.func.jvp (by double backward) and stack_module_state (model ensembling), checked against torch
in float64: jvp's output and tangent on elementwise, matmul, MLP and multi-output functions, with pytree
arguments, has_aux, strict, under an outer grad; the ensembling recipe of torch's docs (vmap over
functional_call on stacked state), values and gradients."""

import copy

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.func.pytree import flatten, unflatten

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def _np(t):
    return np.asarray(t.__array__()) if isinstance(t, dg.Tensor) else t.detach().numpy()


def _close_trees(got, want):
    """Same container structure (pytree specs), leaves equal in shape and float64 value."""
    (g, g_spec), (w, w_spec) = flatten(got), flatten(want)
    assert repr(g_spec) == repr(w_spec)
    for a, b in zip(g, w):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-10, atol=1e-12)


def _map(fn, tree):
    leaves, spec = flatten(tree)
    return unflatten([fn(x) for x in leaves], spec)


def _to(m, tree):
    return _map(m.tensor, tree)


W, W2, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(4)

FUNCS = {  # name: (fn(m, *args), primal arrays)
    "elementwise": (lambda m, x: m.sin(x) * m.exp(x) + x**3, (rng.standard_normal((2, 3)),)),
    "matmul": (lambda m, a, b: m.matmul(a, b), (rng.standard_normal((2, 3)), rng.standard_normal((3, 4)))),
    "mlp": (
        lambda m, x, w, b: m.tanh(m.matmul(m.relu(m.matmul(x, w) + b), m.tensor(W2))),
        (rng.standard_normal((5, 3)), W, B),
    ),
    "two_outputs": (lambda m, x, y: (m.sum(x * y, 1), m.matmul(x, y.T).sigmoid()), (rng.standard_normal((2, 3)),) * 2),
    "dict_argument": (
        lambda m, p: p["a"] * m.cos(p["b"]),
        ({"a": rng.standard_normal(3), "b": rng.standard_normal(3)},),
    ),
}


@pytest.mark.parametrize("name", FUNCS)
def test_jvp_matches_torch(name):
    fn, primals = FUNCS[name]
    tangents = _rand_like(primals)
    got = dg.func.jvp(lambda *a: fn(dg, *a), _to(dg, primals), _to(dg, tangents))
    want = torch.func.jvp(lambda *a: fn(torch, *a), _to(torch, primals), _to(torch, tangents))
    _close_trees(got, want)
    assert not any(t.requires_grad for t in flatten(got)[0])


def _rand_like(tree):
    return _map(lambda a: rng.standard_normal(a.shape), tree)


def test_jvp_has_aux_and_an_output_independent_of_the_input():
    x, t = rng.standard_normal(3), rng.standard_normal(3)

    def f(m, x):
        return (m.exp(x), m.ones(2, dtype=x.dtype), x.argmax()), {"aux": x.sum()}

    got = dg.func.jvp(lambda x: f(dg, x), (dg.tensor(x),), (dg.tensor(t),), has_aux=True)
    want = torch.func.jvp(lambda x: f(torch, x), (torch.tensor(x),), (torch.tensor(t),), has_aux=True)
    _close_trees(got, want)
    with pytest.raises(RuntimeError, match="strict=True.*independent of the inputs"):
        dg.func.jvp(lambda x: dg.ones(2), (dg.tensor(x),), (dg.tensor(t),), strict=True)


def test_jvp_of_a_linear_function_is_the_function_of_the_tangent():
    a, t = rng.standard_normal((4, 3)), rng.standard_normal(3)
    _, tangent = dg.func.jvp(lambda x: dg.tensor(a) @ x, (dg.tensor(rng.standard_normal(3)),), (dg.tensor(t),))
    np.testing.assert_allclose(_np(tangent), a @ t, rtol=1e-12)


def test_jvp_stays_differentiable_to_an_outer_graph():
    """Under grad mode the tangent keeps its graph to a tensor the function reads from outside: the
    second derivative it gives matches torch's."""
    w0, x, t = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    outs = []
    for m in (dg, torch):
        w = m.tensor(w0, requires_grad=True)
        _, tangent = m.func.jvp(lambda x: m.sin(w * x), (m.tensor(x),), (m.tensor(t),))
        tangent.sum().backward()
        outs.append(w.grad)
    _close_trees(*outs)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dg.func.jvp(dg.sin, [dg.ones(2)], [dg.ones(2)]), "primals to be a tuple"),
        (lambda: dg.func.jvp(dg.sin, (dg.ones(2),), [dg.ones(2)]), "same python structure"),
        (lambda: dg.func.jvp(dg.sin, (1.0,), (1.0,)), "only contain Tensors"),
        (lambda: dg.func.jvp(dg.sin, (dg.ones(2),), (dg.ones(3),)), "same shapes"),
        (lambda: dg.func.jvp(lambda x: 1.0, (dg.ones(2),), (dg.ones(2),)), "return only tensors"),
        (lambda: dg.func.jvp(lambda x: x, (dg.ones(2),), (dg.ones(2),), has_aux=True), "tuple: \\(output, aux\\)"),
    ],
)
def test_jvp_errors_read_as_torch(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


# ---- stack_module_state: model ensembling ------------------------------------------------------------------
def _models(m, n, states=None):
    mods = []
    for i in range(n):
        net = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4), m.nn.ReLU(), m.nn.Linear(4, 2)).double()
        if states is not None:
            net.load_state_dict({k: torch.from_numpy(_np(v).copy()) for k, v in states[i].items()})
        net.eval()
        mods.append(net)
    return mods


def _pair(n=3):
    dg_models = _models(dg, n)
    for net in dg_models:  # running stats that differ per model, so buffers are really stacked
        net[1].running_mean.copy_(dg.tensor(rng.standard_normal(4)))
        net[1].running_var.copy_(dg.tensor(rng.uniform(0.5, 2, 4)))
    return dg_models, _models(torch, n, [net.state_dict() for net in dg_models])


def test_stack_module_state_stacks_params_and_buffers_as_torch():
    dg_models, th_models = _pair()
    (p, b), (tp, tb) = dg.func.stack_module_state(dg_models), torch.func.stack_module_state(th_models)
    _close_trees((p, b), (tp, tb))
    assert all(v.requires_grad and v.grad_fn is None for v in p.values())
    assert not any(v.requires_grad for v in b.values())


def test_ensembling_recipe_matches_torch():
    """torch's docs: vmap(fmodel) over stacked state, a minibatch per model and one shared by all."""
    dg_models, th_models = _pair()
    x = rng.standard_normal((3, 5, 3))
    results = []
    for m, models in ((dg, dg_models), (torch, th_models)):
        params, buffers = m.func.stack_module_state(models)
        base = copy.deepcopy(models[0])

        def fmodel(params, buffers, x, m=m, base=base):
            return m.func.functional_call(base, (params, buffers), (x,))

        per_model = m.vmap(fmodel)(params, buffers, m.tensor(x))
        shared = m.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, m.tensor(x[0]))
        (per_model.square().sum() + shared.sum()).backward()
        results.append((per_model, shared, {k: v.grad for k, v in params.items()}))
    _close_trees(*results)


def test_stack_module_state_refuses_what_torch_refuses():
    with pytest.raises(RuntimeError, match="at least one model"):
        dg.func.stack_module_state([])
    with pytest.raises(RuntimeError, match="same class"):
        dg.func.stack_module_state([nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))])
    with pytest.raises(RuntimeError, match="training/eval"):
        dg.func.stack_module_state([nn.Linear(2, 2), nn.Linear(2, 2).eval()])
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="bias.*same .requires_grad"):
        dg.func.stack_module_state([a, b])
