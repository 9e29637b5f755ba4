"""The autograd graph as user code sees it, against torch float64: Node names, next_functions, Node
hooks and metadata, the non-leaf `.grad` warning, and torch.autograd.graph's saved tensors hooks."""

import gc
import re
import warnings
import weakref

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.autograd.graph import (
    Node,
    disable_saved_tensors_hooks,
    increment_version,
    save_on_cpu,
    saved_tensors_hooks,
)
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RNG = np.random.default_rng(0)
A, B = RNG.standard_normal((3, 4)) + 2, RNG.standard_normal((3, 4)) + 2  # (away from 0: div, log, pow)
W, BIAS, M = RNG.standard_normal((5, 4)), RNG.standard_normal(5), RNG.standard_normal((4, 2))
X3 = RNG.standard_normal((2, 3, 4))
TARGET = np.array([1, 0, 4])


def _both(fn, arrays, requires=None):
    """fn(lib, F, *tensors) in torch and in distgraph: [(output, leaves)] for each."""
    runs = []
    for lib, fns in ((torch, TF), (dg, F)):
        leaves = [
            lib.tensor(a, requires_grad=requires is None or requires[i]) if a.dtype.kind == "f" else lib.tensor(a)
            for i, a in enumerate(arrays)
        ]
        runs.append((fn(lib, fns, *leaves), leaves))
    return runs


NAMED = {
    "add": (lambda L, F, x, y: x + y, (A, B)),
    "add_number": (lambda L, F, x: x + 1, (A,)),
    "sub": (lambda L, F, x, y: x - y, (A, B)),
    "mul": (lambda L, F, x, y: x * y, (A, B)),
    "div": (lambda L, F, x, y: x / y, (A, B)),
    "matmul": (lambda L, F, x, m: x @ m, (A, M)),
    "mm": (lambda L, F, x, m: L.mm(x, m), (A, M)),
    "bmm": (lambda L, F, x: L.bmm(x, x.transpose(1, 2)), (X3,)),
    "linear": (lambda L, F, x, w, b: F.linear(x, w, b), (A, W, BIAS)),
    "linear_no_bias": (lambda L, F, x, w: F.linear(x, w), (A, W)),
    "relu": (lambda L, F, x: F.relu(x), (A,)),
    "sigmoid": (lambda L, F, x: x.sigmoid(), (A,)),
    "tanh": (lambda L, F, x: x.tanh(), (A,)),
    "exp": (lambda L, F, x: x.exp(), (A,)),
    "log": (lambda L, F, x: x.log(), (A,)),
    "sum": (lambda L, F, x: x.sum(), (A,)),
    "sum_dim": (lambda L, F, x: x.sum(1), (A,)),
    "pow_number": (lambda L, F, x: x**2, (A,)),
    "pow_tensor": (lambda L, F, x, y: x**y, (A, B)),
    "view": (lambda L, F, x: x.view(12), (A,)),
    "reshape": (lambda L, F, x: x.reshape(2, 6), (A,)),
    "reshape_copying": (lambda L, F, x: x.t().reshape(12), (A,)),
    "transpose_3d": (lambda L, F, x: x.transpose(1, 2), (X3,)),
    "T": (lambda L, F, x: x.T, (A,)),
    "softmax": (lambda L, F, x: F.softmax(x, dim=1), (A,)),
    "log_softmax": (lambda L, F, x: F.log_softmax(x, dim=1), (A,)),
    "cross_entropy": (lambda L, F, x, t: F.cross_entropy(x, t), (RNG.standard_normal((3, 5)), TARGET)),
    "neg": (lambda L, F, x: -x, (A,)),
    "select": (lambda L, F, x: x[0], (A,)),
    "slice": (lambda L, F, x: x[:, 1:], (A,)),
    "index": (lambda L, F, x: x[[0, 2]], (A,)),
    "to": (lambda L, F, x: x.to(L.float32), (A,)),
    "gelu": (lambda L, F, x: F.gelu(x), (A,)),
    "layer_norm": (lambda L, F, x: F.layer_norm(x, (4,)), (A,)),
    "clone": (lambda L, F, x: x.clone(), (A,)),
    "cat": (lambda L, F, x, y: L.cat([x, y]), (A, B)),
}


@pytest.mark.parametrize("case", NAMED)
def test_a_node_has_the_name_torch_gives_it(case):
    fn, arrays = NAMED[case]
    (t_out, _), (d_out, _) = _both(fn, arrays)
    assert d_out.grad_fn.name() == t_out.grad_fn.name()
    t_out.sum().backward()
    d_out.sum().backward()  # (what it saved is freed: the name stays, but for a bmm's, then read as a mm's)
    assert d_out.grad_fn.name() == t_out.grad_fn.name() or case == "bmm"


def test_a_node_prints_as_torchs():
    x = dg.tensor(A, requires_grad=True)
    assert re.fullmatch(r"<MulBackward0 object at 0x[0-9a-f]+>", repr((x * 2).grad_fn))
    assert "grad_fn=<MulBackward0>" in repr(x * 2)


def test_a_custom_function_node_is_named_after_its_class():
    class MyFn(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    assert MyFn.apply(dg.tensor(A, requires_grad=True)).grad_fn.name() == "MyFnBackward"


def test_next_functions_show_leaves_as_accumulate_grad_and_constants_as_none():
    (t_out, (tx, _)), (d_out, (dx, _)) = _both(lambda L, F, x, y: (x * y).exp(), (A, B), requires=(True, False))
    assert dx.grad_fn is None and tx.grad_fn is None
    for out, x in ((t_out, tx), (d_out, dx)):
        ((mul, k),) = out.grad_fn.next_functions
        assert k == 0 and mul.name() == "MulBackward0"
        (acc, i), constant = mul.next_functions
        assert constant == (None, 0) and i == 0
        assert acc.variable is x and acc.next_functions == () and acc.metadata == {}
        assert acc.name() == "torch::autograd::AccumulateGrad" and re.fullmatch(
            r"<AccumulateGrad object at 0x\w+>", repr(acc)
        )
        assert acc is mul.next_functions[0][0]  # one per leaf while it is held
    assert isinstance(d_out.grad_fn, Node) and isinstance(acc, Node)


def test_next_functions_keep_no_graph_alive():
    x = dg.tensor(A, requires_grad=True)
    y = x * 2
    acc = y.grad_fn.next_functions[0][0]
    node = weakref.ref(y.grad_fn)
    gc.disable()
    try:
        del y
        assert node() is None  # freed by reference counting: no cycle through the AccumulateGrad
        leaf = weakref.ref(x)
        del x, acc
        assert leaf() is None
    finally:
        gc.enable()


def _hooked(lib, calls):
    x = lib.tensor(A, requires_grad=True)
    c = lib.tensor(B)
    y = x * c
    y.register_hook(lambda g: calls.append("tensor") or g * 5)
    y.grad_fn.register_prehook(lambda go: calls.append(("pre", len(go))) or (go[0] * 3,))
    y.grad_fn.register_hook(lambda gi, go: calls.append(("post", gi[1], go[0].shape)) or (gi[0] + 1, None))
    removed = y.grad_fn.register_prehook(lambda go: (go[0] * 1000,))
    removed.remove()
    y.backward(lib.tensor(np.ones_like(A)))
    return x.grad


def test_node_hooks_run_as_torchs_around_the_backward():
    t_calls, d_calls = [], []
    expected = _hooked(torch, t_calls)
    got = _hooked(dg, d_calls)
    np.testing.assert_allclose(got.numpy(), expected.numpy())
    assert d_calls == [(c if isinstance(c, str) else (c[0], c[1], tuple(c[2])) if len(c) == 3 else c) for c in t_calls]


@pytest.mark.parametrize("create_graph", [False, True])
def test_node_hooks_see_tensors_in_either_backward_mode(create_graph):
    x = dg.tensor(A, requires_grad=True)
    y = (x * x).sum()
    seen = []
    y.grad_fn.next_functions[0][0].register_hook(lambda gi, go: seen.append(gi + go))
    (g,) = dg.autograd.grad(y, x, create_graph=create_graph)
    assert len(seen) == 1 and all(isinstance(t, dg.Tensor) for t in seen[0])
    np.testing.assert_allclose(g.detach().numpy(), 2 * A)


@pytest.mark.parametrize(
    "kind, hook, message",
    [
        ("post", lambda gi, go: (gi[0], gi[0]), "can't replace a None gradient with a non-None value"),
        ("post", lambda gi, go: (gi[0],), r"incorrect number of values \(got 1, but expected 2\)"),
        ("post", lambda gi, go: 3, "expected tuple, but hook returned 'int'"),
        ("post", lambda gi, go: (gi[0][:2], None), "has changed the size of value"),
        ("pre", lambda go: (go[0], go[0]), r"incorrect number of values \(got 2, but expected 1\)"),
        ("pre", lambda go: go[0], "expected tuple, but hook returned 'Tensor'"),
    ],
)
def test_node_hook_results_are_checked_as_torchs(kind, hook, message):
    for lib in (torch, dg):
        x = lib.tensor(A, requires_grad=True)
        y = x * lib.tensor(B)
        (y.grad_fn.register_hook if kind == "post" else y.grad_fn.register_prehook)(hook)
        with pytest.raises((TypeError, RuntimeError), match=message):
            y.sum().backward()


def test_a_prehook_on_a_leafs_accumulate_grad_changes_what_it_accumulates():
    grads = []
    for lib in (torch, dg):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        handle = y.grad_fn.next_functions[0][0].register_prehook(lambda go: (go[0] * 10,))
        y.sum().backward()
        handle.remove()
        (x * 2).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0])
    np.testing.assert_allclose(grads[1], np.full(A.shape, 22.0))


def test_metadata_is_a_dict_kept_with_the_node():
    y = dg.tensor(A, requires_grad=True) * 2
    y.grad_fn.metadata["step"] = 3
    assert y.grad_fn.metadata == {"step": 3}


def test_reading_grad_of_a_non_leaf_warns_as_torch():
    with warnings.catch_warnings(record=True) as t_warned:
        warnings.simplefilter("always")
        _ = (torch.tensor(A, requires_grad=True) * 2).grad
    with pytest.warns(UserWarning) as d_warned:
        _ = (dg.tensor(A, requires_grad=True) * 2).grad
    assert str(t_warned[0].message).startswith(str(d_warned[0].message))
    x = dg.tensor(A, requires_grad=True)
    kept = x * 2
    kept.retain_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.grad is None and kept.grad is None and dg.tensor(A).grad is None  # leaves, a retained one


# ---- saved tensors hooks -------------------------------------------------------------------------
SAVING = {
    "mul": (lambda L, F, x, y: x * y, (A, B)),
    "mul_constant": (lambda L, F, x, y: x * y, (A, B), (True, False)),
    "mul_number": (lambda L, F, x: x * 3, (A,)),
    "div": (lambda L, F, x, y: x / y, (A, B)),
    "div_number": (lambda L, F, x: x / 3, (A,)),
    "matmul": (lambda L, F, x, m: x @ m, (A, M)),
    "linear": (lambda L, F, x, w, b: F.linear(x, w, b), (A, W, BIAS)),
    "exp": (lambda L, F, x: x.exp(), (A,)),
    "sigmoid": (lambda L, F, x: x.sigmoid(), (A,)),
    "tanh": (lambda L, F, x: x.tanh(), (A,)),
    "relu": (lambda L, F, x: F.relu(x - 2), (A,)),
    "softmax": (lambda L, F, x: F.softmax(x, dim=1), (A,)),
    "log_softmax": (lambda L, F, x: F.log_softmax(x, dim=1), (A,)),
    "pow_number": (lambda L, F, x: x**3, (A,)),
    "sum": (lambda L, F, x: x.sum(1), (A,)),
    "mean": (lambda L, F, x: x.mean(0), (A,)),
    "log": (lambda L, F, x: x.log(), (A,)),
    "chain": (lambda L, F, x, w, b: F.log_softmax(F.linear(x, w, b).tanh(), dim=1), (A, W, BIAS)),
}
HOOKS = {
    "distorting": (lambda t: t * 2, lambda t: t),  # what reaches backward shows what was packed
    "to_numpy": (lambda t: t.detach().numpy().copy(), None),  # any object may stand for a tensor
}


@pytest.mark.parametrize("hooks", HOOKS)
@pytest.mark.parametrize("case", SAVING)
def test_saved_tensors_hooks_give_torchs_gradients(case, hooks):
    fn, arrays, *requires = SAVING[case]
    pack, unpack = HOOKS[hooks]
    grads = []
    for lib, fns in ((torch, TF), (dg, F)):
        leaves = [lib.tensor(a, requires_grad=requires[0][i] if requires else True) for i, a in enumerate(arrays)]
        with (
            saved_tensors_hooks(pack, unpack or dg.tensor)
            if lib is dg
            else torch.autograd.graph.saved_tensors_hooks(pack, unpack or torch.tensor)
        ):
            out = fn(lib, fns, *leaves)
        out.backward(lib.tensor(np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))))
        grads.append([t.grad for t in leaves if t.requires_grad])
    for t_grad, d_grad in zip(*grads):
        np.testing.assert_allclose(d_grad.numpy(), t_grad.numpy(), rtol=1e-12, atol=1e-12)


def _counted(lib, hooks_cls, retain):
    calls = []
    x = lib.tensor(A, requires_grad=True)
    with hooks_cls(lambda t: calls.append("pack") or t.detach(), lambda t: calls.append("unpack") or t):
        y = (x * x).exp()
    calls.append("recorded")
    y.sum().backward(retain_graph=retain)
    if retain:
        y.sum().backward()
    return calls, x.grad


@pytest.mark.parametrize("retain", [False, True])
def test_hooks_in_force_when_an_op_is_recorded_are_called_on_each_backward(retain):
    t_calls, t_grad = _counted(torch, torch.autograd.graph.saved_tensors_hooks, retain)
    d_calls, d_grad = _counted(dg, saved_tensors_hooks, retain)
    assert d_calls == t_calls
    np.testing.assert_allclose(d_grad.numpy(), t_grad.numpy())
    x = dg.tensor(A, requires_grad=True)
    with saved_tensors_hooks(lambda t: t.detach(), lambda t: t):
        y = x.exp()
    y.sum().backward()
    with pytest.raises(AutogradError, match="backward through the graph a second time"):
        y.sum().backward()


def test_only_the_innermost_hooks_apply_and_ops_recorded_outside_use_none():
    x = dg.tensor(A, requires_grad=True)
    with saved_tensors_hooks(lambda t: t * 100, lambda t: t):
        with saved_tensors_hooks(lambda t: t * 2, lambda t: t):
            y = x.exp()
        z = x.exp()
    plain = x.exp()
    with saved_tensors_hooks(lambda t: t * 7, lambda t: t):  # (in force at backward only: not used)
        gy, gz, gp = (dg.autograd.grad(out.sum(), x)[0] for out in (y, z, plain))
    np.testing.assert_allclose(gy.numpy(), 2 * np.exp(A))
    np.testing.assert_allclose(gz.numpy(), 100 * np.exp(A))
    np.testing.assert_allclose(gp.numpy(), np.exp(A))


def test_hooks_hold_in_the_thread_that_set_them():
    import threading

    x = dg.tensor(A, requires_grad=True)
    made = {}
    with saved_tensors_hooks(lambda t: t * 2, lambda t: t):
        worker = threading.Thread(target=lambda: made.setdefault("y", x.exp()))
        worker.start()
        worker.join()
    made["y"].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(A))


def test_what_the_hooks_may_not_do_is_refused_as_torch():
    x = dg.tensor(A, requires_grad=True)
    with saved_tensors_hooks(lambda t: t.detach().numpy(), lambda a: a):
        y = x.exp()
    with pytest.raises(TypeError, match="unpack_hook expected to be a Tensor but got result of type numpy.ndarray"):
        y.sum().backward()
    c = dg.tensor(B)
    with pytest.raises(AutogradError, match="pack hook is modifying its input in place"):
        with saved_tensors_hooks(lambda t: t.add_(1), lambda t: t):
            x * c


def test_disable_saved_tensors_hooks_refuses_them_with_the_message():
    for lib, disable, hooks in (
        (torch, torch.autograd.graph.disable_saved_tensors_hooks, torch.autograd.graph.saved_tensors_hooks),
        (dg, disable_saved_tensors_hooks, saved_tensors_hooks),
    ):
        with disable("no hooks here"):
            with pytest.raises(RuntimeError, match="no hooks here"):
                with hooks(lambda t: t, lambda t: t):
                    pass
        with hooks(lambda t: t, lambda t: t):
            with pytest.raises(RuntimeError, match="not now"):
                with disable("not now"):
                    pass
        with hooks(lambda t: t, lambda t: t):  # usable again once the disabling block ended
            pass


def test_save_on_cpu_keeps_cpu_tensors_and_the_gradients():
    x = dg.tensor(A, requires_grad=True)
    with save_on_cpu():
        y = F.log_softmax(x.tanh() * x, dim=1)
    y.backward(dg.tensor(B))
    expected = torch.tensor(A, requires_grad=True)
    TF.log_softmax(expected.tanh() * expected, dim=1).backward(torch.tensor(B))
    np.testing.assert_allclose(x.grad.numpy(), expected.grad.numpy(), rtol=1e-12)


def test_a_custom_functions_saved_tensors_go_through_the_hooks():
    def make(base):
        class Cube(base):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x, None)
                return x * x * x

            @staticmethod
            def backward(ctx, g):
                x, none = ctx.saved_tensors
                assert none is None
                return 3 * g * x * x

        return Cube

    grads = []
    for lib, base, hooks in (
        (torch, torch.autograd.Function, torch.autograd.graph.saved_tensors_hooks),
        (dg, dg.autograd.Function, saved_tensors_hooks),
    ):
        x = lib.tensor(A, requires_grad=True)
        with hooks(lambda t: t * 2, lambda t: t):
            y = make(base).apply(x)
        y.sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0])


def test_double_backward_differentiates_through_unpacked_tensors():
    grads = []
    for lib, hooks in ((torch, torch.autograd.graph.saved_tensors_hooks), (dg, saved_tensors_hooks)):
        x = lib.tensor(A, requires_grad=True)
        with hooks(lambda t: t.detach().numpy().copy(), lib.tensor):
            y = (x * x.sigmoid()).exp().sum()
        (g,) = lib.autograd.grad(y, x, create_graph=True)
        (gg,) = lib.autograd.grad(g.sum(), x)
        grads.append((g.detach().numpy(), gg.numpy()))
    for d, t in zip(grads[1], grads[0]):
        np.testing.assert_allclose(d, t, rtol=1e-10)


def test_increment_version_makes_a_saved_tensor_stale():
    x = dg.tensor(A, requires_grad=True)
    c = dg.tensor(B)
    y = x * c
    increment_version(c)
    with pytest.raises(AutogradError, match="modified by an inplace operation"):
        y.sum().backward()
