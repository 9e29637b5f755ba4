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


def test_a_resumed_nadam_gives_the_bits_of_an_uninterrupted_run():
    """A deliberate difference from torch (found by the fuzzer, seeds 6, 71, 116, 146): torch's
    load_state_dict casts NAdam's mu_product, a float32 0-d tensor, to a float64 parameter's dtype, so
    torch's resumed run continues in float64 and leaves the run that never stopped. distgraph keeps it
    float32: a checkpoint resumed gives the uninterrupted run's bits, which torch's does not."""
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((2, 3))]
    grads = [[rng.standard_normal((2, 3))] for _ in range(6)]

    def run(lib, resume):
        m = dg if lib == "dg" else torch
        ps = [m.tensor(a.copy(), requires_grad=True) for a in arrays]
        opt = m.optim.NAdam(ps, lr=0.1, momentum_decay=0.1)
        for k, g in enumerate(grads):
            if resume and k == 3:
                fresh = m.optim.NAdam(ps, lr=0.1, momentum_decay=0.1)
                fresh.load_state_dict(opt.state_dict())
                opt = fresh
            opt.zero_grad()
            (ps[0] * m.tensor(g[0])).sum().backward()
            opt.step()
        return ps[0].detach().numpy().copy()

    assert np.array_equal(run("dg", resume=True), run("dg", resume=False))
    assert not np.array_equal(run("torch", resume=True), run("torch", resume=False))  # torch's cast
    np.testing.assert_allclose(run("dg", resume=False), run("torch", resume=False), rtol=1e-13, atol=1e-13)
