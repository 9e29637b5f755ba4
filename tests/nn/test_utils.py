"""nn.utils against torch: gradient clipping (every norm type), clip by value, flat parameter vectors."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.errors import ShapeError
from distgraph.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)
SHAPES = [(4, 3), (3,), (2, 2, 2)]
GRADS = [rng.standard_normal(s) * 3 for s in SHAPES]


def params_with_grads():
    dps, tps = [], []
    for g in GRADS:
        p = nn.Parameter(dg.zeros(*g.shape, dtype=dg.float64))
        p.grad = dg.tensor(g.copy())
        q = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        q.grad = torch.tensor(g.copy())
        dps.append(p)
        tps.append(q)
    return dps, tps


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    dps, tps = params_with_grads()
    total = clip_grad_norm_(dps, max_norm, norm_type)
    ref = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
    assert float(total.item()) == pytest.approx(float(ref), rel=1e-12)
    for p, q in zip(dps, tps):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_skips_parameters_without_grad_and_accepts_one_tensor():
    p, q = nn.Parameter(dg.ones(3)), nn.Parameter(dg.ones(2))
    p.grad = dg.tensor(np.array([3.0, 4.0, 0.0], dtype=np.float32))
    assert float(clip_grad_norm_(iter([p, q]), 1.0).item()) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    assert float(clip_grad_norm_(p, 10.0).item()) == pytest.approx(1.0, rel=1e-5)
    assert float(clip_grad_norm_([q], 1.0).item()) == 0.0


def test_clip_grad_norm_nonfinite():
    p = nn.Parameter(dg.ones(2))
    p.grad = dg.tensor(np.array([np.inf, 1.0], dtype=np.float32))
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert np.isinf(get_total_norm([p.grad]).item())


def test_clip_grad_value_matches_torch():
    dps, tps = params_with_grads()
    clip_grad_value_(dps, 1.25)
    torch.nn.utils.clip_grad_value_(tps, 1.25)
    for p, q in zip(dps, tps):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_parameters_to_vector_round_trip_and_gradient():
    dm, tm = nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    tm.load_state_dict({k: torch.tensor(v.numpy()) for k, v in dm.state_dict().items()})
    vec = parameters_to_vector(dm.parameters())
    np.testing.assert_array_equal(vec.detach().numpy(), torch.nn.utils.parameters_to_vector(tm.parameters()).detach())
    (vec * dg.arange(8, dtype=dg.float64)).sum().backward()  # differentiable, like torch's
    np.testing.assert_array_equal(dm.weight.grad.numpy(), np.arange(6.0).reshape(2, 3))
    new = dg.arange(8, dtype=dg.float64) / 10
    vector_to_parameters(new, dm.parameters())
    np.testing.assert_allclose(dm.bias.detach().numpy(), [0.6, 0.7])
    np.testing.assert_array_equal(parameters_to_vector(dm.parameters()).detach().numpy(), new.numpy())


def test_vector_to_parameters_checks_its_input():
    m = nn.Linear(3, 2)
    with pytest.raises(ShapeError, match="vector has 7 elements, parameters need 8"):
        vector_to_parameters(dg.zeros(7), m.parameters())
    with pytest.raises(ShapeError, match="1-D"):
        vector_to_parameters(dg.zeros(2, 4), m.parameters())
    with pytest.raises(TypeError, match="expected a Tensor"):
        vector_to_parameters(np.zeros(8), m.parameters())
