"""Divergences from torch the autograd API fuzzer (test_autograd_api_fuzz.py) found, one test each,
every one run on both libraries: what a user sees of .grad assignment, retain_grad, requires_grad_,
backward(inputs=...), autograd.grad's pruning and materialize_grads, detach_ and views."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")
A = np.array([0.5, -1.0, 2.0])


def _outcome(fn):
    try:
        out = fn()
    except (RuntimeError, TypeError):
        return "raises"
    return out


def _both(program):
    """program(lib) on distgraph and on torch; the two results."""
    return [program(lib) for lib in (dg, torch)]


def test_grad_assignment_is_checked_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        values = [
            lib.ones(2, dtype=lib.float64),
            lib.ones(3, dtype=lib.float32),
            lib.ones(3, dtype=lib.int64),
            [1.0, 2.0, 3.0],
            x,
            lib.ones(3, dtype=lib.float64),
            None,
        ]
        return [_outcome(lambda v=v: setattr(x, "grad", v)) for v in values] + [x.grad]

    got = _both(program)
    assert got[0] == got[1] == ["raises"] * 5 + [None, None, None]


def test_retain_grad_requires_grad_and_is_a_no_op_on_a_stale_no_grad_view_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        y = x * 1
        with lib.no_grad():
            v = y[:]
            y.add_(1)  # v is stale; reading its grad_fn would raise
        return [
            _outcome(lambda: lib.tensor(A).retain_grad()),
            _outcome(lambda: v.retain_grad()),
            _outcome(lambda: v.requires_grad_(False) is v),  # a leaf: allowed
        ]

    got = _both(program)
    assert got[0] == got[1] == ["raises", None, True]


def test_backward_inputs_retains_a_non_leaf_grad_and_fires_post_accumulate_hooks_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        fired = []
        x.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.tolist()))
        y = x * 2
        (y * 3).sum().backward(inputs=[y, x], retain_graph=True)
        (y * 3).sum().backward()  # y retains its grad from now on
        return y.retains_grad, y.grad.tolist(), x.grad.tolist(), fired

    got = _both(program)
    assert got[0] == got[1] == (True, [6.0] * 3, [12.0] * 3, [[6.0] * 3, [12.0] * 3])


def test_grad_and_backward_inputs_run_only_the_nodes_leading_to_the_inputs_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        fired = []
        x.register_hook(lambda g: fired.append("x"))
        a = x.exp()  # saves its output, written below: running ExpBackward would raise
        a.register_hook(lambda g: fired.append("a"))
        b = a * 3
        a.add_(1)
        c = b * 4
        (gb,) = lib.autograd.grad(c.sum(), b, retain_graph=True)
        c.sum().backward(inputs=[b])
        return gb.tolist(), b.grad.tolist(), fired, x.grad

    got = _both(program)
    assert got[0] == got[1] == ([4.0] * 3, [4.0] * 3, [], None)


def test_grad_of_a_non_leaf_whose_node_need_not_run_includes_its_hooks_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: g * 100)
        alone = lib.autograd.grad((y * 3).sum(), y, retain_graph=True)[0].tolist()  # y's node need not run
        with_x = [g.tolist() for g in lib.autograd.grad((y * 3).sum(), [y, x])]  # it runs: captured before
        return alone, with_x

    got = _both(program)
    assert got[0] == got[1] == ([300.0] * 3, [[3.0] * 3, [600.0] * 3])


def test_materialized_zero_gradients_require_grad_only_under_create_graph_like_torch():
    def program(lib):
        x, unused = lib.tensor(A, requires_grad=True), lib.tensor(A, requires_grad=True)
        flags = []
        for create_graph in (False, True):
            grads = lib.autograd.grad((x * x).sum(), [x, unused], materialize_grads=True, create_graph=create_graph)
            flags.append([g.requires_grad for g in grads])
        return flags

    got = _both(program)
    assert got[0] == got[1] == [[False, False], [True, True]]


def test_a_leaf_that_left_the_graph_gets_no_grad_from_an_older_graph_like_torch():
    def program(lib):
        x, w = lib.tensor(A, requires_grad=True), lib.tensor(A, requires_grad=True)
        out = (x * w).sum()
        x.detach_()
        out.backward()
        return x.grad, w.grad.tolist()

    got = _both(program)
    assert got[0] == got[1] == (None, A.tolist())


def test_a_view_whose_base_was_detached_in_place_is_refused_a_write_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        v = x[:]
        x.detach_()
        return _outcome(lambda: v.add_(1)), x.tolist(), x.requires_grad, x.is_leaf

    got = _both(program)
    assert got[0] == got[1] == ("raises", A.tolist(), False, True)


def test_a_view_keeps_a_graph_after_its_base_left_it_and_memory_was_written_like_torch():
    def program(lib):
        y = lib.tensor(A, requires_grad=True)
        v = y[:]
        y.detach_()
        y.zero_()  # the write makes v rebuild its graph: one reaching nothing
        return v.requires_grad, v.grad_fn is None, _outcome(lambda: (v * 2).sum().backward()), y.grad

    got = _both(program)
    assert got[0] == got[1] == (True, False, None, None)


def test_a_view_of_a_view_requires_grad_through_its_root_like_torch():
    def program(lib):
        x = lib.tensor(A)
        mid = x[:]
        inner = mid.view(-1)
        mid.requires_grad_(True)  # its own flag: not its views'
        x2 = lib.tensor(A)
        inner2 = x2[:].view(-1)
        x2.requires_grad_(True)
        return inner.requires_grad, inner2.requires_grad

    got = _both(program)
    assert got[0] == got[1] == (False, True)


def test_a_stale_view_of_a_base_outside_the_graph_refuses_once_the_base_requires_grad_like_torch():
    def program(lib):
        c = lib.tensor(A)
        with lib.inference_mode():
            v = c[:]
        c.add_(1)
        before = _outcome(lambda: v.grad_fn is None)  # nothing to rebuild: v stays stale
        c.requires_grad_(True)
        return before, _outcome(lambda: v.grad_fn)

    got = _both(program)
    assert got[0] == got[1] == (True, "raises")


def test_an_inference_tensor_saved_only_for_a_gradient_no_input_needs_is_fine_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        with lib.inference_mode():
            a = lib.tensor(A) * 2
        with lib.no_grad():
            v = x[:]  # requires grad, but no gradient reaches it: mul needs not save `a` for it
        y = a * v
        return y.requires_grad, _outcome(lambda: (a * x).sum())  # saved for x's gradient: refused

    got = _both(program)
    assert got[0] == got[1] == (True, "raises")


def test_detach_in_place_of_a_view_of_an_inference_tensor_is_allowed_like_torch():
    def program(lib):
        with lib.inference_mode():
            a = lib.tensor(A) * 2
            v = a.view(-1)
        return _outcome(lambda: v.detach_() is v)

    got = _both(program)
    assert got[0] == got[1] is True


def test_a_saved_non_leaf_detached_in_place_is_refused_in_backward_like_torch():
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        y = x * 2
        z = (y * y).sum()  # saves y, an output of MulBackward
        y.detach_()
        w = x * 2
        through_view = (w[:] * w[:]).sum()  # saves the views, not w
        w.detach_()
        through_view.backward()
        return _outcome(lambda: z.backward()), x.grad.tolist()

    got = _both(program)
    assert got[0] == got[1] == ("raises", (8 * A).tolist())


def test_a_stale_view_made_in_inference_mode_is_no_refusal_once_its_root_left_the_graph_like_torch():
    # seed 1827 (10 steps): whether a stale view with no graph has one to rebuild is its root's
    # requires_grad, not that of the view it was made of (which keeps a graph reaching nothing)
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        mid = x.unsqueeze(0)
        with lib.inference_mode():
            v = mid.view(-1)
        with lib.no_grad():
            x.zero_()
        x.detach_()
        return v.requires_grad, _outcome(lambda: v.grad_fn is None), _outcome(lambda: v.is_leaf), mid.requires_grad

    got = _both(program)
    assert got[0] == got[1] == (False, True, True, True)


def test_a_stale_view_of_a_no_grad_view_refuses_its_graph_after_its_root_left_it_like_torch():
    # seed 157 (16 steps): a view made in grad mode of a view made in no_grad mode has a graph; after a
    # write into its memory, reading it is refused, whether or not its root still requires grad
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        with lib.no_grad():
            mid = x[:]
        v = mid.view(-1)
        with lib.no_grad():
            v.fill_(0.5)
        x.detach_()
        return v.requires_grad, _outcome(lambda: v.grad_fn is None), _outcome(lambda: v.is_leaf)

    got = _both(program)
    assert got[0] == got[1] == (True, "raises", "raises")


def test_a_stale_view_rebuilds_its_graph_from_its_root_not_through_the_view_it_was_made_of_like_torch():
    # (found while fixing seed 157) the view it was made of, rebuilt first, keeps its hooks and
    # retain_grad on its own new graph, which a backward from the other view does not reach
    def program(lib):
        x = lib.tensor(A, requires_grad=True) * 1
        mid = x[:]
        v = mid.view(-1)
        with lib.no_grad():
            x.mul_(2)
        calls = []
        mid.grad_fn  # noqa: B018 - reading it rebuilds mid's graph
        mid.retain_grad()
        mid.register_hook(lambda g: calls.append(g.tolist()))
        (v * 3).sum().backward()
        return mid.grad, calls

    got = _both(program)
    assert got[0] == got[1] == (None, [])


def test_a_retained_grad_is_a_copy_of_the_gradient_handed_on_like_torch():
    # seed 1142 (16 steps): autograd.grad returned the very gradient retain_grad kept as .grad, so a write
    # into the result changed the .grad
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        y = x + 1
        y.retain_grad()
        (g,) = lib.autograd.grad(y * 1, [y], grad_outputs=lib.full((3,), 3.0, dtype=lib.float64))
        g.mul_(2)
        return y.grad.tolist(), g.tolist()

    got = _both(program)
    assert got[0] == got[1] == ([3.0] * 3, [6.0] * 3)


def test_autograd_grad_results_that_are_one_gradient_are_one_tensor_like_torch():
    # seed 365 (16 steps): two results around one array had two version counters, so a write into one
    # was not seen where the other was saved (nor by a view of it); grad_outputs itself is returned too
    def program(lib):
        x = lib.tensor(A, requires_grad=True)
        y = x + 1
        seed = lib.full((3,), 4.0, dtype=lib.float64)
        g_y, g_x = lib.autograd.grad(y * 1, [y, x], grad_outputs=seed)
        view = g_x[:]
        g_y.add_(1)
        (g,) = lib.autograd.grad(x + 1, [x], grad_outputs=seed)
        return g_y is g_x, g_x._version, view._version, view.tolist(), g is seed

    got = _both(program)
    assert got[0] == got[1] == (True, 1, 1, [5.0] * 3, True)


def test_a_grad_reached_by_the_callers_gradient_is_a_copy_like_torch():
    # (found while fixing seed 365) `a.grad` was the caller's gradient tensor's memory
    def program(lib):
        a, b = lib.tensor(A, requires_grad=True), lib.tensor(A, requires_grad=True)
        g = lib.ones(3, dtype=lib.float64)
        (a + b).backward(g)
        g.mul_(5)
        return a.grad.tolist(), b.grad.tolist()

    got = _both(program)
    assert got[0] == got[1] == ([1.0] * 3, [1.0] * 3)


def test_base_is_the_root_of_a_chain_of_views_and_none_for_a_tensor_that_is_no_view_like_torch():
    def program(lib):
        x = lib.tensor(np.arange(6.0).reshape(2, 3))
        mid = x[1:]
        inner = mid.view(-1).unsqueeze(0)
        copied = x.t().reshape(-1)  # a reshape that copies is no view
        of_copy = copied[1:]
        with lib.inference_mode():
            i = lib.ones(3)
            iv = i[:]
        with lib.no_grad():
            made_in_no_grad = x[0]
        return (
            x._base is None,
            mid._base is x,
            inner._base is x,
            copied._base is None,
            of_copy._base is copied,
            iv._base is None,
            made_in_no_grad._base is x,
            [t._is_view() for t in (x, mid, inner, copied, of_copy, iv, made_in_no_grad)],
        )

    got = _both(program)
    assert got[0] == got[1] == (True,) * 7 + ([False, True, True, False, True, False, True],)
