"""Bugs the random-program fuzzer found in the ops of the API round (test_program_fuzz_new_ops.py, fourth hunt),
each pinned against torch (float64 values and gradients; errors where torch refuses)."""

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


# ---- abs of a bool tensor (seed 4388) ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["abs", "abs_", "absolute", "__abs__"])
def test_abs_refuses_a_bool_tensor(name):
    """torch has no abs kernel for bool ('"abs_cpu" not implemented for 'Bool''); distgraph's took it."""
    with pytest.raises(RuntimeError, match="not implemented for 'Bool'"):
        getattr(torch.tensor([True, False]), name)()
    with pytest.raises(dg.errors.DTypeError, match=r"abs: not implemented for this dtype \(a bool tensor"):
        getattr(dg.tensor([True, False]), name)()


def test_refused_abs_leaves_a_saved_where_condition_unwritten():
    """`c.abs_().add_(0.5)` on where's bool condition: distgraph's abs_ wrote c (its version moved) before add_
    refused, so where's backward found its saved condition modified; torch refuses at abs_ and writes nothing."""
    c = np.array([[True, False], [False, True]])
    grads = []
    for m in (dg, torch):
        cond, x = m.tensor(c), m.tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
        y = m.where(cond, x, x * 3)
        with pytest.raises(Exception, match="not implemented"):
            cond.abs_()
        assert cond._version == 0
        grads.append(np.asarray(m.autograd.grad(y.sum(), [x])[0].detach()))
    np.testing.assert_array_equal(grads[0], grads[1])


def test_abs_of_integer_and_float_tensors_is_unchanged():
    for values in ([-2, 0, 3], [-1.5, 0.0, 2.0]):
        got, want = dg.tensor(values).abs(), torch.tensor(values).abs()
        assert got.dtype.name == str(want.dtype).split(".")[-1]
        np.testing.assert_array_equal(got.array, want.numpy())
