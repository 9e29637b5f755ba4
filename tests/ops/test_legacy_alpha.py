"""torch's deprecated add/sub(alpha, other) overload (a Number, then the Tensor), against torch: the same
values and gradient, with torch's deprecation UserWarning; a Tensor alpha beside a Tensor other is a
TypeError naming the op, not an ambiguous-truth error."""

import warnings

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

_A = np.array([1.0, -2.0, 3.5])
_B = np.array([0.5, 4.0, -1.0])

CALLS = {
    "add": lambda lib, a, b: a.add(-0.5, b),
    "add_": lambda lib, a, b: a.clone().add_(-0.5, b),
    "sub": lambda lib, a, b: a.sub(2, b),
    "sub_": lambda lib, a, b: a.clone().sub_(2, b),
    "torch.add": lambda lib, a, b: lib.add(a, 3, b),
    "torch.sub": lambda lib, a, b: lib.sub(a, -1.5, b),
}


@pytest.mark.parametrize("name", CALLS)
def test_alpha_first_overload_matches_torch_with_its_warning(name):
    """torch warns once a process (the first call here): its message is matched by distgraph's on each."""
    op = name.split(".")[-1].rstrip("_")
    got = {}
    for lib in (torch, dg):
        a, b = lib.tensor(_A).requires_grad_(), lib.tensor(_B).requires_grad_()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = CALLS[name](lib, a, b)
        if lib is dg:
            (message,) = [str(w.message) for w in record if w.category is UserWarning]
            assert message == (
                f"This overload of {op} is deprecated:\n\t{op}(Number alpha, Tensor other)\n"
                f"Consider using one of the following signatures instead:\n\t{op}(Tensor other, *, Number alpha = 1)"
            )
        (out * lib.tensor(_A)).sum().backward()
        got[lib] = out.detach(), a.grad, b.grad
    for d, t in zip(got[dg], got[torch]):
        np.testing.assert_allclose(d.array, t.numpy(), rtol=1e-12)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_tensor_alpha_with_tensor_other_is_a_type_error_naming_the_op(op):
    a, b = dg.tensor(_A), dg.tensor(_B)
    with pytest.raises(TypeError, match=rf"{op}\(\): alpha must be a Number"):
        getattr(dg, op)(a, b, b)
