"""Fixes from the review of the autograd core, each checked against torch: a dirty view's base, hook results,
gradients paired with outputs, checked `requires_grad` assignment, in-place `.grad` accumulation, gradcheck's
perturbation and keywords, custom Functions' gradient and saved-tensor rules, and second backwards."""

import importlib

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

LIBS = (torch, dg)


def _error(fn):
    """(type category, message) of what `fn()` raises, with torch's names read as distgraph's."""
    try:
        fn()
    except TypeError as e:
        return "TypeError", str(e).replace("torch.", "distgraph.")
    except RuntimeError as e:
        return "RuntimeError", str(e).replace("torch.", "distgraph.")
    return None


def _same_error(case):
    """torch's error and message (distgraph's may name the op after it)."""
    want, got = _error(lambda: case(torch)), _error(lambda: case(dg))
    assert want is not None and got is not None
    assert got[0] == want[0] and got[1].startswith(want[1]), (got, want)


# ---- 1: mark_dirty on a view -----------------------------------------------------------------------
def _dirty_fn(L):
    class Triple(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(3)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 3

    return Triple


@pytest.mark.parametrize("use_out", [False, True])
def test_mark_dirty_on_a_view_sends_its_base_gradient_through_the_function(use_out):
    def run(L):
        x = L.ones(4, requires_grad=True)
        base = x * 1
        out = _dirty_fn(L).apply(base[:2])
        loss = base.sum() + (out.sum() if use_out else 0)
        loss.backward()
        return x.grad.tolist(), base.tolist()

    assert run(dg) == run(torch)  # ([3, 3, 1, 1], ...): the base's gradient goes through backward too


def test_mark_dirty_on_a_view_of_a_leaf_is_refused_like_torch():
    def case(L):
        _dirty_fn(L).apply(L.ones(4, requires_grad=True)[:2])

    want, got = _error(lambda: case(torch)), _error(lambda: case(dg))
    assert got[0] == want[0] and got[1].startswith(want[1].rstrip("."))  # (distgraph's names the view)


# ---- 2: what a hook returns is checked --------------------------------------------------------------
@pytest.mark.parametrize(
    "leaf, hook",
    [
        (False, lambda L: lambda g: L.ones(1)),  # another size, on a non-leaf
        (True, lambda L: lambda g: L.ones(2, 3)),  # another size, on a leaf
        (True, lambda L: lambda g: g.double()),  # another dtype
        (False, lambda L: lambda g: 5.0),  # not a tensor
    ],
)
def test_a_hook_changing_the_gradient_type_or_size_raises_like_torch(leaf, hook):
    def case(L):
        x = L.ones(3, requires_grad=True)
        t = x if leaf else x * 1
        t.register_hook(hook(L))
        (t * 2).sum().backward()

    _same_error(case)


# ---- 3: gradients paired with outputs --------------------------------------------------------------
@pytest.mark.parametrize("api", ["backward", "grad"])
def test_fewer_gradients_than_outputs_raise_like_torch(api):
    def case(L):
        x = L.ones(3, requires_grad=True)
        outs = [x * 2, x * 3]
        if api == "backward":
            L.autograd.backward(outs, [L.ones(3)])
        else:
            L.autograd.grad(outs, x, grad_outputs=L.ones(3))  # a lone gradient is one gradient

    _same_error(case)


def test_a_lone_gradient_pairs_with_a_lone_output_like_torch():
    def run(L):
        x = L.ones(3, requires_grad=True)
        return L.autograd.grad([(x * 2).sum()], x, grad_outputs=L.tensor(2.0))[0].tolist()

    assert run(dg) == run(torch)


def test_the_tensor_without_grad_is_named_by_its_index_like_torch():
    def case(L):
        x = L.ones(3, requires_grad=True)
        L.autograd.grad([x.sum(), L.ones(())], x)

    _same_error(case)


# ---- 4: requires_grad assignment is checked --------------------------------------------------------
def _assign_to_inference_tensor(L):
    with L.inference_mode():
        x = L.ones(3)
    x.requires_grad = True


def _assign_false_to_non_leaf(L):
    (L.ones(3, requires_grad=True)[:2] * 2).requires_grad = False


def _assign_false_to_non_leaf_view(L):
    (L.ones(3, requires_grad=True) * 2)[:2].requires_grad = False


def _assign_true_to_non_leaf(L):
    (L.ones(3, requires_grad=True) * 2).requires_grad = True  # (requires_grad_(True) would do)


@pytest.mark.parametrize(
    "case",
    [_assign_to_inference_tensor, _assign_false_to_non_leaf, _assign_false_to_non_leaf_view, _assign_true_to_non_leaf],
)
def test_assigning_requires_grad_is_checked_like_torch(case):
    _same_error(case)


def test_assigning_requires_grad_to_an_integer_tensor_is_refused_like_torch():
    for L in LIBS:
        x = L.zeros(3, dtype=L.int64)
        with pytest.raises((RuntimeError, TypeError), match="floating point"):
            x.requires_grad = True
        assert not x.requires_grad


def test_assigning_requires_grad_still_sets_it():
    def run(L):
        x = L.ones(3)
        x.requires_grad = True
        with L.no_grad():
            v = x[:2]  # a leaf view, requiring grad through its base
        v.requires_grad = True
        (x * 2).sum().backward()
        x.requires_grad = False
        return x.grad.tolist(), x.requires_grad, v.requires_grad, v.is_leaf

    assert run(dg) == run(torch)


# ---- 5: .grad accumulates in place ------------------------------------------------------------------
def test_grad_accumulates_in_place_like_torch():
    def run(L):
        x = L.ones(3, requires_grad=True)
        (x * 2).sum().backward()
        g, version = x.grad, x.grad._version
        (x * 2).sum().backward()
        return g is x.grad, x.grad._version - version, g.tolist()

    assert run(dg) == run(torch) == (True, 1, [4.0, 4.0, 4.0])


def test_a_grad_viewing_a_bucket_fills_the_bucket_like_torch():
    def run(L):
        bucket = L.zeros(6)
        p = L.ones(3, requires_grad=True)
        p.grad = bucket[:3]
        (p * 2).sum().backward()
        return bucket.tolist(), p.grad.tolist()

    assert run(dg) == run(torch)


def test_each_grad_has_its_own_memory_like_torch():
    def run(L):  # reshape's gradient is a view of the one add sends b: a's .grad must not share it
        a, b = L.ones(3, requires_grad=True), L.ones(3, requires_grad=True)
        (a.reshape(3) + b).sum().backward()
        a.grad.add_(5)
        (a.reshape(3) + b).sum().backward()  # accumulated in place into a.grad alone
        return a.grad.tolist(), b.grad.tolist()

    assert run(dg) == run(torch)


def test_grad_under_create_graph_accumulates_out_of_place_like_torch():
    def run(L):
        x = L.tensor([1.0, 2.0], requires_grad=True)
        (x**2).sum().backward(create_graph=True)
        first = x.grad
        (x**3).sum().backward(create_graph=True)
        return first is x.grad, first.tolist(), x.grad.requires_grad

    assert run(dg) == run(torch)


# ---- 6: a first .grad under create_graph is its own tensor -------------------------------------------
def test_first_grad_under_create_graph_is_its_own_tensor_like_torch():
    def run(L):
        a, b, seed = L.ones(3, requires_grad=True), L.ones(3, requires_grad=True), L.ones(3)
        (a + b).backward(seed, create_graph=True)
        a.grad.detach().zero_()
        return a.grad is b.grad, a.grad is seed, b.grad.tolist(), seed.tolist()

    assert run(dg) == run(torch)


# ---- 7: gradcheck -----------------------------------------------------------------------------------
def _strided(L):
    a = np.random.default_rng(0).random((3, 4))
    return L.tensor(a).t().detach().requires_grad_(), L.tensor(a)[:, ::2].detach().requires_grad_()


def test_gradcheck_perturbs_non_contiguous_inputs_like_torch():
    for L in LIBS:
        transposed, strided = _strided(L)
        assert L.autograd.gradcheck(lambda t: (t * t).sum(0), (transposed,))
        assert L.autograd.gradcheck(lambda t: t.exp().sum(0), (strided,))


def test_gradgradcheck_takes_a_lone_tensor_and_torch_keywords():
    for L in LIBS:
        x = L.tensor(np.random.default_rng(1).random(3), requires_grad=True)
        assert L.autograd.gradgradcheck(lambda t: (t**3).sum(), x)
        assert L.autograd.gradcheck(lambda t: (t**3).sum(), x, fast_mode=True)
        assert L.autograd.gradcheck(lambda t: (t**3).sum(), x, check_undefined_grad=False, nondet_tol=0.0)


def _noisy(L):
    class Noisy(L.autograd.Function):  # a backward that is not reentrant (within 1e-9)
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * (2 + float(np.random.default_rng().random()) * 1e-9)

    return Noisy


@pytest.mark.parametrize("tol, passes", [(0.0, False), (1e-6, True)])
def test_gradcheck_honours_nondet_tol_like_torch(tol, passes):
    for L in LIBS:
        x = L.tensor(np.random.default_rng(2).random(3), requires_grad=True)
        assert L.autograd.gradcheck(_noisy(L).apply, (x,), nondet_tol=tol, raise_exception=False) is passes


# ---- 8: custom Functions, second backwards ----------------------------------------------------------
def test_a_gradient_for_a_non_tensor_input_raises_like_torch():
    def case(L):
        class Scale(L.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                return x * k

            @staticmethod
            def backward(ctx, g):
                return g * 2, g

        Scale.apply(L.ones(3, requires_grad=True), 2.0).sum().backward()

    _same_error(case)


def _cube(L, calls):
    once_differentiable = importlib.import_module(f"{L.__name__}.autograd.function").once_differentiable

    class Cube(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            calls.append(L.is_grad_enabled())
            return g * 3 * x**2

    return Cube


def test_once_differentiable_like_torch():
    for L in LIBS:
        calls = []
        x = L.tensor([2.0], requires_grad=True)
        _cube(L, calls).apply(x).sum().backward()
        (g,) = L.autograd.grad((_cube(L, calls).apply(x) ** 2).sum(), x, create_graph=True)
        assert x.grad.tolist() == [12.0] and calls == [False, False] and g.requires_grad

    def case(L):
        x = L.tensor([2.0], requires_grad=True)
        (g,) = L.autograd.grad((_cube(L, []).apply(x) ** 2).sum(), x, create_graph=True)
        g.sum().backward()

    _same_error(case)


def test_saved_tensors_after_backward_raise_like_torch():
    def case(L):
        class Double(L.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * 2

            @staticmethod
            def backward(ctx, g):
                Double.ctx = ctx
                return g * 2

        Double.apply(L.ones(3, requires_grad=True)).sum().backward()
        Double.ctx.saved_tensors

    _same_error(case)


def _custom(L, save, multi):
    class Fn(L.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            if save:
                ctx.save_for_backward(x)
            return (x * 2, x * 3) if multi else x * 2

        @staticmethod
        def backward(ctx, *gs):
            return gs[0] * 2 + gs[1] * 3 if multi else gs[0] * 2  # (not reading what was saved)

    return Fn


@pytest.mark.parametrize(
    "graph",
    [
        lambda L, x: (x + x).sum(),
        lambda L, x: (x.reshape(3, 1).t() + L.ones(3)).sum(),
        lambda L, x: _custom(L, save=False, multi=False).apply(x).sum(),
        lambda L, x: sum(_custom(L, save=True, multi=True).apply(x)).sum(),
        lambda L, x: x.exp().sum(),  # exp saved its output: the second backward raises
    ],
)
def test_a_second_backward_runs_through_nodes_that_saved_nothing_like_torch(graph):
    def run(L):
        x = L.ones(3, requires_grad=True)
        y = graph(L, x)
        y.backward()
        y.backward()
        return x.grad.tolist()

    try:
        want = run(torch)
    except RuntimeError:
        _same_error(run)
    else:
        assert run(dg) == want
