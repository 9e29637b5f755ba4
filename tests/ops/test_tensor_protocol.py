"""Python's protocols on a Tensor answer as torch's: iteration (a 0-d tensor was an empty iterable, so
`sum(tensor(5.))` was 0), `in` (an error on a 2-D tensor), format specs on a 0-d tensor (`f"{loss:.4f}"`
raised), `== None`; and a custom Function's (and so checkpoint's) bool/int outputs do not require grad."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.utils.checkpoint import checkpoint

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("lib", [dg, torch], ids=["distgraph", "torch"])
def test_iteration_gives_rows_and_refuses_a_0d_tensor(lib):
    rows = list(lib.tensor([[1, 2], [3, 4]]))
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4]]
    assert sum(lib.tensor([1.0, 2.5])).item() == 3.5
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        sum(lib.tensor(5.0))


def test_iterated_rows_stay_in_the_graph():
    x = dg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a, b = x
    (a * 2 + b * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2, 2], [3, 3]])


@pytest.mark.parametrize("lib", [dg, torch], ids=["distgraph", "torch"])
def test_membership_is_any_equal_element_as_torch(lib):
    t = lib.tensor([[1, 2], [3, 4]])
    assert 2 in t and 5 not in t
    assert lib.tensor([1, 5]) in t and lib.tensor([7, 5]) not in t
    for other in (None, "a"):
        with pytest.raises((TypeError, RuntimeError), match="only supports Tensor or scalar"):
            other in t  # noqa: B015


@pytest.mark.parametrize("lib", [dg, torch], ids=["distgraph", "torch"])
def test_a_0d_tensor_formats_as_its_number_and_others_take_no_spec(lib):
    assert f"{lib.tensor(0.12345):.3f}" == "0.123" and f"{lib.tensor(7):>4d}" == "   7"
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{lib.tensor([1.5]):.2f}"


@pytest.mark.parametrize("lib", [dg, torch], ids=["distgraph", "torch"])
def test_comparing_with_none_or_another_object_is_identity_as_torch(lib):
    t = lib.tensor([1.0, 2.0])
    assert (t == None) is False and (t != None) is True  # noqa: E711
    assert (t == {}) is False and (t == "a") is False
    assert t in [None, t] and [None, t].index(t) == 1
    with pytest.raises(TypeError):
        t < None  # noqa: B015


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoints_bool_output_does_not_require_grad_as_torch(use_reentrant):
    lin = dg.nn.Linear(2, 2)
    y, mask = checkpoint(lambda x: (lin(x), x > 0), dg.ones(1, 2, requires_grad=True), use_reentrant=use_reentrant)
    assert y.requires_grad and not mask.requires_grad
    assert mask.numpy().tolist() == [[True, True]]
    y.sum().backward()
    assert lin.weight.grad is not None
