"""Divergences from torch.optim that `test_optim_fuzz` found, each pinned on its own against torch (float64)."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim

torch = pytest.importorskip("torch")


def _pair(arrays, flags=None):
    flags = flags or [True] * len(arrays)
    return (
        [dg.tensor(a.copy(), requires_grad=f) for a, f in zip(arrays, flags)],
        [torch.tensor(a.copy(), requires_grad=f) for a, f in zip(arrays, flags)],
    )


def _step(dopt, topt, dps, tps, grads):
    for p, q, g in zip(dps, tps, grads):
        p.grad, q.grad = (None, None) if g is None else (dg.tensor(g.copy()), torch.tensor(g.copy()))
    dopt.step()
    topt.step()


def test_adamw_groups_hold_decoupled_weight_decay_and_a_group_may_turn_it_off():
    """torch's AdamW is Adam with decoupled_weight_decay=True in every group (seed 194): distgraph's groups
    lacked the key, so its state_dict differed and a group could not turn decoupling off."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(3), rng.standard_normal((2, 2))]
    dps, tps = _pair(arrays)
    groups = lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "decoupled_weight_decay": False}]  # noqa: E731
    dopt = optim.AdamW(groups(dps), lr=0.1, weight_decay=0.3)
    topt = torch.optim.AdamW(groups(tps), lr=0.1, weight_decay=0.3)
    assert [g["decoupled_weight_decay"] for g in dopt.param_groups] == [True, False]
    for _ in range(3):
        _step(dopt, topt, dps, tps, [rng.standard_normal(a.shape) for a in arrays])
    for p, q in zip(dps, tps):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-13, atol=1e-13)


def test_load_state_dict_replaces_the_groups_options_as_torch():
    """A group added after a scheduler has no initial_lr; a fresh optimizer + scheduler gives it one, which
    torch's load_state_dict drops (the saved group replaces the live one) and distgraph's kept (seed 178)."""
    ps = [dg.zeros(2, requires_grad=True), dg.zeros(3, requires_grad=True)]
    opt = optim.SGD([ps[0]], lr=0.1)
    optim.lr_scheduler.StepLR(opt, step_size=2)
    opt.add_param_group({"params": [ps[1]], "lr": 0.5})
    saved = opt.state_dict()
    fresh = optim.SGD([ps[0]], lr=0.1)
    fresh.add_param_group({"params": [ps[1]], "lr": 0.5})
    optim.lr_scheduler.StepLR(fresh, step_size=2)
    fresh.load_state_dict(saved)
    assert "initial_lr" in fresh.param_groups[0] and "initial_lr" not in fresh.param_groups[1]


def test_adagrad_makes_its_state_at_construction_from_the_constructors_accumulator_value():
    """torch's Adagrad creates every parameter's state in its constructor (seed 177), and starts each sum —
    also of a group added later — at the constructor's initial_accumulator_value, whatever the group says."""
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(3), rng.standard_normal(2), rng.standard_normal(4)]
    dps, tps = _pair(arrays, [True, False, True])
    groups = lambda ps: [{"params": ps[:2], "initial_accumulator_value": 2.0}]  # noqa: E731
    dopt = optim.Adagrad(groups(dps), lr=0.1, initial_accumulator_value=0.5)
    topt = torch.optim.Adagrad(groups(tps), lr=0.1, initial_accumulator_value=0.5)
    assert dopt.state_dict()["state"].keys() == topt.state_dict()["state"].keys() == {0, 1}
    dopt.add_param_group({"params": dps[2:], "initial_accumulator_value": 3.0})
    topt.add_param_group({"params": tps[2:], "initial_accumulator_value": 3.0})
    for _ in range(2):
        _step(dopt, topt, dps, tps, [rng.standard_normal(3), None, rng.standard_normal(4)])
    for p, q in zip(dps, tps):
        np.testing.assert_allclose(dopt.state[p]["sum"], topt.state[q]["sum"].numpy(), rtol=1e-14)
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.xfail(
    strict=True,
    reason="left open: distgraph keeps a resumed NAdam bit-identical to an uninterrupted run "
    "(test_optimizers_more, test_optimizer_capture), torch's resumed run is not",
)
def test_nadam_mu_product_loaded_for_a_float64_parameter_continues_in_float64():
    """torch's load_state_dict casts NAdam's mu_product (a float32 0-d tensor) to the float64 parameter's
    dtype, so the products after a resume are float64's; distgraph keeps rounding them to float32 (seed 71).
    Mirroring torch (a numpy float64 entry after load, `functional._scalar` keeping it) breaks the tests that
    resumed runs give the bits of uninterrupted ones, which torch itself does not give."""
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((2, 3))]
    dps, tps = _pair(arrays)
    dopt, topt = optim.NAdam(dps, lr=0.1, momentum_decay=0.1), torch.optim.NAdam(tps, lr=0.1, momentum_decay=0.1)
    grads = [[rng.standard_normal((2, 3))] for _ in range(6)]
    for g in grads[:3]:
        _step(dopt, topt, dps, tps, g)
    dnew, tnew = optim.NAdam(dps, lr=0.1, momentum_decay=0.1), torch.optim.NAdam(tps, lr=0.1, momentum_decay=0.1)
    dnew.load_state_dict(dopt.state_dict())
    tnew.load_state_dict(topt.state_dict())
    for g in grads[3:]:
        _step(dnew, tnew, dps, tps, g)
    assert abs(dnew.state[dps[0]]["mu_product"] - tnew.state[tps[0]]["mu_product"].item()) <= 1e-16
    np.testing.assert_allclose(dps[0].detach().numpy(), tps[0].detach().numpy(), rtol=1e-13, atol=1e-13)
