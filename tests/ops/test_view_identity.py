"""Which shape ops return their input itself and which a new tensor, as torch 2.13 decides: a view to
the same shape (view, reshape, expand, squeeze with nothing to squeeze, identity permute, ...) is a new
tensor sharing memory, so its requires_grad, grad and detach_ are its own; contiguous(), to() to the
same device/dtype, flatten over one dim and broadcast_tensors of a matching shape return self. Copying
ops (flip, cat of one tensor) never alias their input."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check, torch

SAME_SHAPE = {
    "view": lambda a: a.view(3, 2),
    "view-infer": lambda a: a.view(-1, 2),
    "reshape": lambda a: a.reshape(3, 2),
    "view_as": lambda a: a.view_as(a),
    "reshape_as": lambda a: a.reshape_as(a),
    "expand": lambda a: a.expand(3, 2),
    "expand_as": lambda a: a.expand_as(a),
    "broadcast_to": lambda a: a.broadcast_to((3, 2)),
    "squeeze": lambda a: a.squeeze(),
    "squeeze-dim": lambda a: a.squeeze(0),
    "unflatten": lambda a: a.unflatten(0, (3,)),
    "permute-identity": lambda a: a.permute(0, 1),
    "transpose-same-dim": lambda a: a.transpose(1, 1),
    "movedim-same": lambda a: a.movedim(0, 0),
    "flatten-1d": lambda a: a.flatten(),
    "flatten-one-dim": lambda a: a.flatten(1, 1),
    "t-1d": lambda a: a.t(),
    "contiguous": lambda a: a.contiguous(),
    "to-same-device": lambda a: a.to("cpu"),
    "cpu": lambda a: a.cpu(),
    "to-same-dtype": lambda a: a.to(a.dtype),
    "double": lambda a: a.double(),
    "broadcast_tensors-same": lambda a: (type(a).__module__.startswith("torch") and torch or dg).broadcast_tensors(a)[
        0
    ],
    "flip-no-dims": lambda a: a.flip(()),
    "cat-one": lambda a: (type(a).__module__.startswith("torch") and torch or dg).cat([a]),
}


ONE_D = {"flatten-1d", "t-1d"}  # torch treats these on a 1-d tensor, which they get


@pytest.mark.parametrize("name", SAME_SHAPE)
def test_same_shape_op_returns_self_exactly_when_torch_does(name):
    fn = SAME_SHAPE[name]
    data = np.arange(3.0) if name in ONE_D else np.arange(6.0).reshape(3, 2)
    a, ta = dg.tensor(data), torch.tensor(data)
    assert (fn(a) is a) == (fn(ta) is ta)


def test_new_view_has_its_own_autograd_state_and_shares_memory():
    a = dg.arange(3.0)
    b = a.view(3)
    b.requires_grad_()
    assert b.requires_grad and not a.requires_grad
    b.grad = dg.ones(3)
    assert a.grad is None
    a.add_(1)
    np.testing.assert_array_equal(b.detach().numpy(), [1.0, 2.0, 3.0])  # one memory
    c = a.view(3)
    c.requires_grad_()
    c.requires_grad_(False)  # a leaf view toggles its own flag; the base's is untouched
    assert not a.requires_grad and a.grad is None


def test_detach_in_place_on_a_same_shape_view_is_refused_as_on_any_view():
    a = dg.arange(3.0, requires_grad=True)
    with pytest.raises(dg.errors.AutogradError, match="detach_"):
        a.view(3).detach_()
    with pytest.raises(RuntimeError):
        torch.arange(3.0, requires_grad=True).view(3).detach_()
    assert a.requires_grad and a.is_leaf


@pytest.mark.parametrize(
    "name", ["view", "reshape", "expand", "squeeze", "permute-identity", "flip-no-dims", "cat-one"]
)
def test_gradient_flows_through_the_same_shape_node(name):
    fn = SAME_SHAPE[name]
    out = check(lambda a: fn(a) * 2, lambda a: fn(a) * 2, np.arange(6.0).reshape(3, 2))
    assert out.grad_fn is not None


def test_writes_into_a_same_shape_view_reach_the_input_and_copies_do_not():
    a = dg.zeros(3)
    a.view(3).add_(1)
    a.expand(3).add_(1)  # nothing broadcast: writable, as torch's
    a.flip(0).add_(10)
    dg.cat([a]).add_(10)
    np.testing.assert_array_equal(a.numpy(), [2.0, 2.0, 2.0])
