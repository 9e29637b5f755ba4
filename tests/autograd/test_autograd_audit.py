"""Found by porting torch scripts: an input a custom Function returns as-is is a view the Function owns (an
in-place op on it gave a silently wrong gradient), non-reentrant checkpointing leaves None where only an unused
output reaches (a zero grad the optimizer stepped), anomaly mode refuses NaN only, Function.apply takes
keywords, and forward_ad is there (tests/test_forward_ad.py checks it against torch)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import AutogradError
from distgraph.utils import checkpoint as ck

torch = pytest.importorskip("torch")


class Identity(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g


def test_an_input_returned_as_is_may_not_be_written_in_place_as_torchs():
    x = dg.tensor([-1.0, 2.0, 3.0], requires_grad=True) * 1
    with pytest.raises(AutogradError, match="Output 0 of Identity is a view and is being modified inplace"):
        Identity.apply(x).relu_()
    hooked = nn.ReLU(inplace=True)
    hooked.register_full_backward_hook(lambda *args: None)
    with pytest.raises(AutogradError, match="Output 0 of BackwardHookFunction is a view"):
        hooked(dg.tensor([-1.0, 2.0, 3.0], requires_grad=True) * 1)
    a = dg.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    (Identity.apply(a * 1) * 2).sum().backward()  # read, not written: the gradient flows as before
    assert a.grad.tolist() == [2.0, 2.0, 2.0]


def test_non_reentrant_checkpoint_leaves_what_only_unused_outputs_reach_without_a_gradient():
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    x = dg.ones(1, 2, requires_grad=True)
    used, _ = ck.checkpoint(lambda x: (first(x), second(x)), x, use_reentrant=False)
    used.sum().backward()
    assert second.weight.grad is None and first.weight.grad is not None
    before = second.weight.detach().numpy().copy()
    dg.optim.AdamW(second.parameters(), lr=0.1, weight_decay=0.5).step()
    np.testing.assert_array_equal(second.weight.detach().numpy(), before)  # (stepped by a zero grad before)


def test_anomaly_mode_refuses_nan_gradients_only_as_torchs():
    a = dg.tensor([0.0, 1.0], dtype=dg.float64, requires_grad=True)
    with dg.autograd.detect_anomaly():
        a.sqrt().sum().backward()  # an inf gradient is a value
    assert a.grad.tolist()[0] == float("inf")
    b = dg.tensor([-1.0], dtype=dg.float64, requires_grad=True)
    with dg.autograd.detect_anomaly(), pytest.raises(AutogradError, match="returned nan values in its 0th output"):
        (b.sqrt() * 0).sum().backward()


def test_function_apply_takes_keywords_as_torch_2():
    class Scale(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x, k=2.0):
            ctx.k = k
            return x * k

        @staticmethod
        def backward(ctx, g):
            return g * ctx.k, None

    a = dg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = Scale.apply(a, k=3.0)
    out.sum().backward()
    assert out.tolist() == [3.0, 6.0, 9.0] and a.grad.tolist() == [3.0, 3.0, 3.0]


def test_forward_ad_gives_a_tangent():
    from distgraph.autograd import forward_ad

    with forward_ad.dual_level():
        dual = forward_ad.make_dual(dg.tensor([1.0, 2.0]), dg.tensor([3.0, 4.0]))
        assert forward_ad.unpack_dual(dual * dual).tangent.tolist() == [6.0, 16.0]
    assert dg.autograd.forward_ad is forward_ad


def test_grad_with_batched_grad_outputs_gives_torchs_jacobian_and_hessian():
    x = np.array([1.0, 2.0, 3.0])
    a, t = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (jac,) = dg.autograd.grad(a**3, a, dg.eye(3, dtype=dg.float64), is_grads_batched=True, create_graph=True)
    (want,) = torch.autograd.grad(t**3, t, torch.eye(3, dtype=torch.float64), is_grads_batched=True, create_graph=True)
    np.testing.assert_allclose(jac.detach().numpy(), want.detach().numpy())
    (hess,) = dg.autograd.grad(jac.sum(0), a, dg.eye(3, dtype=dg.float64), is_grads_batched=True)
    (want,) = torch.autograd.grad(want.sum(0), t, torch.eye(3, dtype=torch.float64), is_grads_batched=True)
    np.testing.assert_allclose(hess.numpy(), want.numpy())
    with pytest.raises(AutogradError, match="is_grads_batched=True needs grad_outputs"):
        dg.autograd.grad(a.sum(), a, is_grads_batched=True)
