"""The autograd engine's contract, each point against torch's behaviour: retain_graph, higher-order
gradients, hooks, grad modes, version counters, anomaly detection, custom Functions, gradcheck, deep
chains without recursion, and saved arrays released as soon as backward is done with them."""

import gc
import subprocess
import sys
import threading
import warnings
import weakref

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")
A = np.array([0.3, -1.2, 2.0])


def both(a=A):
    return dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def close(d, t, rtol=1e-10):
    np.testing.assert_allclose(np.asarray(d.detach().numpy()), t.detach().numpy(), rtol=rtol, atol=1e-12)


# ---- retain_graph -------------------------------------------------------------------------------------
def test_second_backward_through_freed_graph_raises_like_torch():
    (x, xt) = both()
    y, yt = (x.exp() * x).sum(), (xt.exp() * xt).sum()
    y.backward(retain_graph=True)
    y.backward()  # retained: works, accumulates
    yt.backward(retain_graph=True)
    yt.backward()
    close(x.grad, xt.grad)
    with pytest.raises(RuntimeError, match="backward through the graph a second time") as info:
        y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        yt.backward()
    assert isinstance(info.value, AutogradError)


def test_autograd_grad_frees_unless_retained_and_create_graph_retains():
    x, _ = both()
    y = (x.sin() * x).sum()
    dg.autograd.grad(y, [x], retain_graph=True)
    dg.autograd.grad(y, [x])
    with pytest.raises(RuntimeError, match="second time"):
        dg.autograd.grad(y, [x])
    z = (x.sin() * x).sum()
    dg.autograd.grad(z, [x], create_graph=True)  # retain_graph defaults to create_graph
    dg.autograd.grad(z, [x])


# ---- higher order -------------------------------------------------------------------------------------
def test_third_order_gradient_matches_torch():
    x, xt = both()
    f, ft = (x.sin() * x**3).sum(), (xt.sin() * xt**3).sum()
    gs, gts = [f], [ft]
    for _ in range(3):
        (g,) = dg.autograd.grad(gs[-1].sum(), [x], create_graph=True)
        (gt,) = torch.autograd.grad(gts[-1].sum(), [xt], create_graph=True)
        close(g, gt)
        gs.append(g)
        gts.append(gt)


def test_hessian_vector_product_and_grad_outputs_match_torch():
    x, xt = both()
    v = np.array([1.0, -2.0, 0.5])
    y, yt = x.tanh() * x.exp(), xt.tanh() * xt.exp()
    (g,) = dg.autograd.grad(y, [x], grad_outputs=[dg.tensor(v)], create_graph=True)
    (gt,) = torch.autograd.grad(yt, [xt], grad_outputs=[torch.tensor(v)], create_graph=True)
    close(g, gt)
    (hv,) = dg.autograd.grad(g, [x], grad_outputs=dg.tensor(v))
    (hvt,) = torch.autograd.grad(gt, [xt], grad_outputs=torch.tensor(v))
    close(hv, hvt)
    assert not hv.requires_grad


def test_grad_of_unused_input_needs_allow_unused():
    x, _ = both()
    u = dg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused"):
        dg.autograd.grad((x * 2).sum(), [x, u])
    gx, gu = dg.autograd.grad((x * 2).sum(), [x, u], allow_unused=True)
    assert gu is None and gx.tolist() == [2.0, 2.0, 2.0]


def test_grad_does_not_touch_dot_grad_and_backward_accumulates():
    x, _ = both()
    dg.autograd.grad((x * x).sum(), [x])
    assert x.grad is None
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0, 5.0]


def test_gradient_of_a_0d_leaf_accumulated_over_two_backwards_stays_an_array():
    """Summing two 0-d gradients gave a numpy scalar as .grad's array: zero_grad(set_to_none=False) then
    failed to zero it in place ("'numpy.float64' object does not support item assignment")."""
    d, t = both(np.array(1.5))
    for _ in range(2):
        (d * 3.0).backward()
        (t * 3.0).backward()
    assert isinstance(d.grad.array, np.ndarray) and d.grad.item() == t.grad.item() == 6.0
    dg.optim.SGD([d]).zero_grad(set_to_none=False)
    assert d.grad.item() == 0.0


def test_diamond_graph_and_multiple_outputs_match_torch():
    x, xt = both()

    def f(m, t):
        h = t.exp()
        return (h * t.sin() + h.sqrt()) * h, h.sum()

    outs, outs_t = f(dg, x), f(torch, xt)
    dg.autograd.backward(list(outs), [dg.tensor([1.0, 2.0, 3.0], dtype=dg.float64), None])
    torch.autograd.backward(list(outs_t), [torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), None])
    close(x.grad, xt.grad)


# ---- hooks -------------------------------------------------------------------------------------------
def test_hooks_see_and_replace_gradients_and_can_be_removed():
    x, xt = both()
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    y = x * 3
    handle = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert np.array_equal(seen[0], [30.0, 30.0, 30.0]) and x.grad.tolist() == [30.0, 30.0, 30.0]
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0, 3.0]


def test_retain_grad_keeps_a_non_leaf_gradient_like_torch():
    x, xt = both()
    h, ht = x.exp(), xt.exp()
    h.retain_grad()
    ht.retain_grad()
    (h * h).sum().backward()
    (ht * ht).sum().backward()
    close(h.grad, ht.grad)
    with pytest.warns(UserWarning, match="not a leaf Tensor"):  # as torch's: a likely mistake
        assert (x * 2).grad is None


def test_hook_on_leaf_that_requires_no_grad_is_refused():
    with pytest.raises(RuntimeError, match="doesn't require gradient|does not require grad"):
        dg.ones(2).register_hook(lambda g: g)


# ---- grad modes --------------------------------------------------------------------------------------
def test_no_grad_and_enable_grad_as_context_and_decorator():
    x, _ = both()
    with dg.no_grad():
        assert not (x * 2).requires_grad and not dg.is_grad_enabled()
        with dg.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert dg.is_grad_enabled()

    @dg.no_grad()
    def f(t):
        return t * 2

    @dg.enable_grad()
    def g(t):
        return t * 2

    assert not f(x).requires_grad and (x * 2).requires_grad
    with dg.no_grad():
        assert g(x).requires_grad
    with dg.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert f.__name__ == "f"


def test_grad_mode_is_restored_after_an_exception_and_is_per_thread():
    with pytest.raises(ValueError), dg.no_grad():
        raise ValueError
    assert dg.is_grad_enabled()
    seen = []
    with dg.no_grad():
        t = threading.Thread(target=lambda: seen.append(dg.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]  # as torch: grad mode is thread-local


# ---- version counters --------------------------------------------------------------------------------
def test_in_place_change_of_saved_tensor_raises_instead_of_wrong_gradient():
    x, _ = both()
    a = x * 1
    y = (a * a).sum()  # saves a
    with dg.no_grad():
        a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as info:
        y.backward()
    assert "version 1" in str(info.value) and "expected version 0" in str(info.value)


def test_in_place_change_of_an_unsaved_tensor_is_fine():
    x, _ = both()
    a = x * 1
    y = (a + 2).sum()  # add saves nothing
    with dg.no_grad():
        a.mul_(5)
    y.backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


# ---- anomaly detection -------------------------------------------------------------------------------
def test_detect_anomaly_names_the_op_and_the_forward_line():
    x = dg.tensor([-1.0, 1.0], requires_grad=True)
    with dg.autograd.detect_anomaly():
        y = x.sqrt().sum()  # d sqrt/dx at -1 is nan (at 0 inf, which torch's anomaly mode lets pass)
        with pytest.raises(AutogradError) as info:
            y.backward()
    msg = str(info.value)
    assert "Sqrt" in msg and "test_engine.py" in msg and "x.sqrt().sum()" in msg


def test_without_anomaly_mode_nan_gradients_pass_silently_like_torch():
    """torch warns of nothing; numpy warned 'divide by zero' from sqrt's rule (and 'invalid value' from
    0·inf further back). The caller's numpy error state is left as it was."""
    x = dg.tensor([0.0, 1.0], requires_grad=True)
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x.sqrt() * dg.tensor([0.0, 1.0])).sum().backward()
        dg.autograd.grad(x.sqrt().sum(), x, create_graph=True)
    assert np.isnan(x.grad.numpy()[0]) and np.geterr() == before


def test_ops_making_inf_or_nan_do_not_warn_as_torch_while_the_users_own_numpy_still_does():
    """x / 0, log(0), sqrt(-1), 0 ** -1, sum/mean/cumsum of inf and -inf printed numpy's RuntimeWarnings from
    inside distgraph (the reductions from numpy's own helpers, which the filter did not cover); torch prints
    none. A numpy call of the user's own keeps its warning. Run as a script: pytest puts back the warning
    filters it found after collecting, which drops the one distgraph's import installs."""
    script = (
        "import numpy as np, distgraph as dg\n"
        "x = dg.tensor([1.0, 0.0, -1.0])\n"
        "got = [x / dg.tensor([0.0, 0.0, 0.0]), x.log(), x.sqrt(), x.pow(-1.0), x.exp() * 1e308 * 10]\n"
        "inf = dg.tensor([np.inf, -np.inf])\n"  # reductions: numpy's own Python helpers raised these
        "got += [inf.sum(), inf.mean(), inf.cumsum(0), dg.tensor([1e308, 1e308]).sum()]\n"
        "assert all(not np.isfinite(t.numpy()).all() for t in got)\n"
        "np.log(np.zeros(1))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [line for line in run.stderr.splitlines() if "Warning" in line] == [
        "<string>:7: RuntimeWarning: divide by zero encountered in log"
    ]


# ---- custom Function ----------------------------------------------------------------------------------
class Cube(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x * ctx.scale, None


def test_custom_function_with_ctx_matches_analytic_gradient_and_gradcheck():
    x, _ = both()
    y = Cube.apply(x, 2.0)
    assert y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * A**2)
    assert dg.autograd.gradcheck(lambda t: Cube.apply(t, 0.5), [dg.tensor(A, requires_grad=True)])


def test_custom_function_double_backward_matches_torch():
    x, xt = both()
    (g,) = dg.autograd.grad(Cube.apply(x, 1.0).sum(), [x], create_graph=True)
    (gt,) = torch.autograd.grad((xt**3).sum(), [xt], create_graph=True)
    close(g, gt)
    (gg,) = dg.autograd.grad(g.sum(), [x])
    (ggt,) = torch.autograd.grad(gt.sum(), [xt])
    close(gg, ggt)


def test_custom_function_needs_input_grad_and_non_tensor_arguments():
    seen = []

    class Scale(dg.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, factor):
            seen.append(tuple(ctx.needs_input_grad))
            ctx.factor = factor
            return a * b * factor

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None, None

    a, b = dg.ones(2, requires_grad=True), dg.full((2,), 3.0)
    y = Scale.apply(a, b, 2.0)
    assert y.requires_grad and seen[0][:2] == (True, False)
    y.sum().backward()
    assert a.grad.tolist() == [2.0, 2.0] and b.grad is None


def test_custom_function_saved_tensor_modified_in_place_raises():
    x, _ = both()
    a = x * 1
    y = Cube.apply(a, 1.0).sum()
    with dg.no_grad():
        a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


# ---- gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck_accepts_right_and_rejects_wrong_gradients():
    class WrongSin(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * 1.01  # off by 1%

    xs = [dg.tensor(A, requires_grad=True)]
    assert dg.autograd.gradcheck(lambda t: t.sin() * t, xs)
    with pytest.raises(AutogradError, match="Jacobian mismatch"):
        dg.autograd.gradcheck(WrongSin.apply, xs)
    assert dg.autograd.gradcheck(WrongSin.apply, xs, raise_exception=False) is False
    assert dg.autograd.gradgradcheck(lambda t: t.tanh() * t, xs)


# ---- deep chains and memory ----------------------------------------------------------------------------
def test_ten_thousand_op_chain_has_no_recursion_limit():
    x = dg.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000], rtol=1e-3)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    del y  # dropping a 10,000-node graph must not recurse either
    gc.collect()


def test_saved_arrays_are_freed_after_backward():
    x = dg.tensor(np.ones(1000), requires_grad=True)
    mid = x.exp()
    ref = weakref.ref(mid)
    y = (mid * 2).sum()
    node = y.grad_fn
    del mid
    gc.collect()
    assert ref() is not None  # kept alive by the graph, which backward needs
    y.backward()
    gc.collect()
    assert ref() is None  # backward released it
    # the node dropped its references (a node that saved nothing, as sum, keeps its inputs' metadata only)
    assert node.inputs is None or not any(isinstance(t, dg.Tensor) for t in node.inputs)


def test_retained_graph_keeps_saved_arrays_until_the_last_backward():
    x = dg.tensor(np.ones(10), requires_grad=True)
    mid = x.exp()
    ref = weakref.ref(mid)
    y = (mid * mid).sum()
    del mid
    y.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None
    y.backward()
    gc.collect()
    assert ref() is None and x.grad.numpy()[0] == pytest.approx(4 * np.e**2)


def test_backward_of_non_scalar_without_gradient_is_a_clear_error():
    x, _ = both()
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()
    (x * 2).backward(dg.ones(3, dtype=dg.float64))
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_leaf_flags_and_detach_like_torch():
    x, _ = both()
    y = x * 2
    assert x.is_leaf and not y.is_leaf and y.detach().is_leaf and not y.detach().requires_grad
    z = dg.ones(2).requires_grad_()
    assert z.requires_grad and z.is_leaf
    y.detach_()
    assert y.grad_fn is None and not y.requires_grad


def test_backward_on_an_output_and_a_tensor_derived_from_it_reaches_the_leaves():
    """Roots where one is reached from the other (an RNN's `out` and `h_n = out[-1]`): each gradient
    arrives once; walking the shared root twice used to leave its inputs waiting, with no .grad."""
    a = np.random.default_rng(0).standard_normal((4, 3))
    x, xt = dg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, yt = (x * 2).tanh(), (xt * 2).tanh()
    z, zt = y[-1].exp(), yt[-1].exp()
    gy, gz = np.ones((4, 3)), np.full(3, 0.5)
    dg.autograd.backward([y, z], [dg.tensor(gy), dg.tensor(gz)])
    torch.autograd.backward([yt, zt], [torch.tensor(gy), torch.tensor(gz)])
    close(x.grad, xt.grad)


@pytest.mark.parametrize(
    "make",
    [
        lambda lib: lib.zeros(3)[0],
        lambda lib: lib.zeros(3, requires_grad=True)[1:],
        lambda lib: (lib.zeros(3, requires_grad=True) * 1).view(3, 1),
        lambda lib: lib.zeros(2, 3).t(),
        lambda lib: lib.zeros(2, 3).permute(1, 0),
    ],
    ids=["index", "slice-of-leaf", "view-of-result", "t", "permute"],
)
def test_detach_in_place_of_a_view_raises_as_torch(make):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="Can't detach views in-place"):
        make(torch).detach_()
    with pytest.raises(dg.errors.AutogradError, match="detach_: Can't detach views in-place. Use detach"):
        make(dg).detach_()


def test_detach_in_place_of_a_non_view_a_detached_tensor_or_a_copying_reshape_works():
    b = dg.zeros(3, requires_grad=True)
    out = (b * 1).detach_()
    assert out.grad_fn is None and not out.requires_grad
    assert b.detach().detach_() is not None
    assert b[[0, 1]].detach_() is not None  # advanced indexing copies
    assert dg.zeros(2, 3).t().reshape(6).detach_() is not None  # reshape had to copy, as in torch
