"""dg.autograd.Function beyond one Tensor in, one out, each point against torch: tuple outputs,
set_materialize_grads, mark_non_differentiable, mark_dirty, the setup_context style, and the checks
torch makes on what backward returns."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError

torch = pytest.importorskip("torch")
A = np.array([0.3, -1.2, 2.0])
B = np.array([1.5, 0.4, -0.7])


def function_class(lib, forward, backward, setup_context=None):
    """The same Function for dg and for torch (`lib` is the module), from plain functions."""
    body = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    if setup_context is not None:
        body["setup_context"] = staticmethod(setup_context)
    return type("MulAdd", (lib.autograd.Function,), body)


def mul_add_forward(ctx, x, y):
    ctx.save_for_backward(x, y)
    return x * y, x + y


def mul_add_backward(ctx, g_prod, g_sum):
    x, y = ctx.saved_tensors
    return g_prod * y + g_sum, g_prod * x + g_sum


def close(d, t):
    np.testing.assert_allclose(np.asarray(d.detach().numpy()), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_tuple_outputs_get_their_gradients_to_first_and_second_order_like_torch():
    results = []
    for lib in (dg, torch):
        fn = function_class(lib, mul_add_forward, mul_add_backward)
        x, y = lib.tensor(A, requires_grad=True), lib.tensor(B, requires_grad=True)
        prod, total = fn.apply(x, y)
        loss = (prod * prod).sum() + (total**3).sum()
        gx, gy = lib.autograd.grad(loss, [x, y], create_graph=True)
        hx, hy = lib.autograd.grad((gx * gy).sum(), [x, y])
        results.append((gx, gy, hx, hy))
    for d, t in zip(*results):
        close(d, t)
    x, y = dg.tensor(A, requires_grad=True), dg.tensor(B, requires_grad=True)
    assert dg.autograd.gradcheck(function_class(dg, mul_add_forward, mul_add_backward).apply, (x, y))


def test_an_unused_output_gets_zeros_or_none_under_set_materialize_grads_false():
    for materialize in (True, False):
        seen = {}

        def forward(ctx, x, materialize=materialize):
            ctx.set_materialize_grads(materialize)
            return x * 2, x * 3

        def backward(ctx, g2, g3):
            seen[lib.__name__] = None if g3 is None else g3.tolist()
            return g2 * 2 if g3 is None else g2 * 2 + g3 * 3

        grads = []
        for lib in (dg, torch):
            x = lib.tensor(A, requires_grad=True)
            twice, _ = function_class(lib, forward, backward).apply(x)
            twice.sum().backward()
            grads.append(x.grad)
        close(*grads)
        assert seen["distgraph"] == seen["torch"] == (None if not materialize else [0.0, 0.0, 0.0])


def test_non_differentiable_and_non_tensor_outputs_match_torch():
    def forward(ctx, x):
        mask = x > 0
        ctx.mark_non_differentiable(mask)
        return x * 2, mask, 7

    def backward(ctx, g, g_mask, g_int):
        assert g_int is None and g_mask is not None  # torch: zeros for the mask, None for the int
        return g * 2

    outs = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        twice, mask, seven = function_class(lib, forward, backward).apply(x)
        twice.sum().backward()
        outs.append((twice.requires_grad, mask.requires_grad, mask.grad_fn is None, seven, x.grad.tolist()))
    assert outs[0] == outs[1] == (True, False, True, 7, [2.0, 2.0, 2.0])

    def forward_one(ctx, x):
        out = x * 2
        ctx.mark_non_differentiable(out)
        return out

    out = function_class(dg, forward_one, backward).apply(dg.tensor(A, requires_grad=True))
    assert not out.requires_grad and out.grad_fn is None


def test_mark_dirty_returns_the_input_with_new_history_like_torch():
    def forward(ctx, x):
        ctx.save_for_backward(x)  # versioned when forward returns, so the in-place change is fine
        x.mul_(2)
        ctx.mark_dirty(x)
        return x

    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x

    results = []
    for lib in (dg, torch):
        fn = function_class(lib, forward, backward)
        leaf = lib.tensor(A, requires_grad=True)
        x = leaf * 1
        y = fn.apply(x)
        (y * y).sum().backward()
        results.append((y is x, leaf.grad.tolist()))
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            fn.apply(lib.tensor(A, requires_grad=True))
    assert results[0] == results[1]


def test_setup_context_style_matches_torch():
    def forward(x, k):
        return x * k

    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    def backward(ctx, g):
        return g * ctx.k, None

    grads = []
    for lib in (dg, torch):
        x = lib.tensor(A, requires_grad=True)
        function_class(lib, forward, backward, setup_context).apply(x, 3.0).sum().backward()
        grads.append(x.grad)
    close(*grads)


def test_backward_results_are_checked_like_torch():
    def forward(ctx, x):
        return x * 2

    for returned, ok in [
        (lambda g: (g, None, None), True),  # trailing Nones beyond the inputs are dropped
        (lambda g: dg.ones(2, 3), True),  # broadcastable to the input: summed back to its shape
        (lambda g: dg.ones(4), False),
        (lambda g: (g, g), False),
    ]:
        fn = function_class(dg, forward, lambda ctx, g, returned=returned: returned(g))
        x = dg.ones(3, requires_grad=True)
        if ok:
            fn.apply(x).sum().backward()
            assert x.grad.shape == (3,)
        else:
            with pytest.raises(AutogradError, match="MulAddBackward returned an (invalid gradient|incorrect number)"):
                fn.apply(x).sum().backward()


def test_grad_fn_name_keeps_the_class_name_and_a_saved_output_is_version_checked():
    def forward(ctx, x):
        out = x.exp()
        ctx.save_for_backward(out)
        return out

    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out

    y = function_class(dg, forward, backward).apply(dg.tensor(A, requires_grad=True))
    assert y.grad_fn.name() == "MulAddBackward"
    y.add_(1)
    with pytest.raises(AutogradError, match="modified by an inplace operation"):
        y.sum().backward()
