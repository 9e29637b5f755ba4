"""dg.inference_mode against torch.inference_mode: flags, inference tensors, what is refused later."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import AutogradError
from tests import parity

torch = pytest.importorskip("torch")


def _state(lib):
    """What each library says inside inference_mode (and nested inference_mode(False))."""
    with lib.inference_mode():
        x = lib.ones(2)
        w = lib.ones(2, requires_grad=True)
        y = x * 2
        inside = (
            lib.is_inference_mode_enabled(),
            lib.is_grad_enabled(),
            x.is_inference(),
            y.is_inference(),
            x[0].is_inference(),
            (w * 2).requires_grad,
            w.is_inference(),
        )
        with lib.inference_mode(False):
            nested = (lib.is_inference_mode_enabled(), lib.is_grad_enabled(), lib.ones(1).is_inference())
        x.add_(1)  # in place inside the mode is allowed
    after = (lib.is_inference_mode_enabled(), lib.is_grad_enabled(), (x * 2).is_inference(), x.detach().is_inference())
    with lib.no_grad():
        plain = lib.ones(1).is_inference()
    return inside, nested, after, plain, x.clone().is_inference()


def test_inference_mode_flags_and_inference_tensors_match_torch():
    assert _state(dg) == _state(torch)


@pytest.mark.parametrize(
    "use",
    [
        lambda x, w: (x * w).sum().backward(),  # mul saves x for backward
        lambda x, w: w @ x,
        lambda x, w: x.add_(1),
        lambda x, w: x._version,
        lambda x, w: x.requires_grad_(),
    ],
    ids=["saved-by-mul", "saved-by-matmul", "inplace", "version", "requires-grad"],
)
def test_inference_tensor_is_refused_later_where_torch_refuses_it(use):
    for lib, err in ((torch, RuntimeError), (dg, AutogradError)):
        with lib.inference_mode():
            x = lib.ones(2, dtype=lib.float64)
        w = lib.ones(2, dtype=lib.float64, requires_grad=True)
        with pytest.raises(err, match="[Ii]nference tensor"):
            use(x, w)


def test_inference_tensor_in_an_op_that_saves_nothing_and_a_clone_are_fine():
    with dg.inference_mode():
        x = dg.ones(2, dtype=dg.float64)
    w = dg.ones(2, dtype=dg.float64, requires_grad=True)
    (x + w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])
    (x.clone() * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0])


def test_inference_mode_as_decorator_with_and_without_parentheses():
    @dg.inference_mode
    def bare(a):
        return a * 2, dg.is_inference_mode_enabled()

    @dg.inference_mode()
    def called(a):
        return a * 2

    w = dg.ones(2, requires_grad=True)
    out, on = bare(w)
    assert on and out.is_inference() and not out.requires_grad
    assert called(w).is_inference()
    assert not dg.is_inference_mode_enabled() and dg.is_grad_enabled()


def test_model_forward_under_inference_mode_matches_torch():
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))

    def run(lib):
        with lib.inference_mode():
            return lib.tanh(lib.tensor(x) @ lib.tensor(w).T)

    out = parity.check(lambda: run(dg), lambda: run(torch), grad=False)
    assert out.is_inference()


def test_enable_grad_inside_inference_mode_records_nothing_as_torch():
    x = dg.ones(2, requires_grad=True)
    tx = torch.ones(2, requires_grad=True)
    with dg.inference_mode(), torch.inference_mode():
        with dg.enable_grad(), torch.enable_grad():
            assert dg.is_grad_enabled() == torch.is_grad_enabled() == True  # noqa: E712
            y, ty = x * 2, tx * 2
            assert (y.requires_grad, y.grad_fn, y.is_inference()) == (ty.requires_grad, None, ty.is_inference())
        with dg.set_grad_enabled(True), torch.set_grad_enabled(True):
            assert (x * 2).requires_grad == (tx * 2).requires_grad == False  # noqa: E712
        with dg.inference_mode(False), torch.inference_mode(False):  # leaving the mode does record
            assert (x * 2).requires_grad == (tx * 2).requires_grad == True  # noqa: E712
        assert dg.is_grad_enabled() == torch.is_grad_enabled() == False  # noqa: E712
    assert (x * 2).requires_grad and dg.is_grad_enabled()


@pytest.mark.parametrize(
    "make",
    [lambda t: t.view(3), lambda t: t.unsqueeze(0), lambda t: t.T, lambda t: t[1:]],
    ids=["view", "unsqueeze", "T", "slice"],
)
def test_view_of_a_normal_tensor_made_in_inference_mode_is_no_inference_tensor_like_torch(make):
    results = []
    for lib in (dg, torch):
        x = lib.tensor(np.array([0.5, -1.0, 2.0]))
        with lib.inference_mode():
            v = make(x)
        v.add_(1)  # outside the mode: fine, it shares x's version counter
        results.append((v.is_inference(), x._version, x.tolist()))
    assert results[0] == results[1]
