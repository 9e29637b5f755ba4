"""Adafactor, Muon and LBFGS against torch (float64): Adafactor and Muon over 12 steps of given gradients with
their options and param groups, LBFGS step by step on a float64 least-squares problem (closure re-evaluated,
with and without the strong-Wolfe line search); state dict round trips, torch's state layout, bad input."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError
from distgraph.optim.functional_matrix import _round_bfloat16, zeropower_via_newtonschulz
from tests.optim.test_optimizers import _data, _max_diff, _step_both, assert_resumes_identically

torch = pytest.importorskip("torch")
TOL = 1e-12
SHAPES = [(4, 3), (2, 3, 5), (3,), ()]
MATRICES = [(4, 3), (3, 5), (6, 6)]

ADAFACTOR = [
    dict(),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.5, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=2.0),
    dict(lr=0.05, maximize=True),
    dict(lr=0.05, eps=(None, 10.0)),  # RMS(param) below eps2: alpha is eps2·rho
]
MUON = [
    dict(),
    dict(lr=0.02, momentum=0.9, nesterov=False, weight_decay=0.0),
    dict(lr=0.02, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, adjust_lr_fn="original", ns_steps=3, ns_coefficients=(2.0, -1.5, 0.5), eps=1e-3),
]


def _pair(name, kwargs, shapes, steps, seed=0):
    init, grads = _data(np.random.default_rng(seed), steps, shapes)
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    dopt, topt = getattr(optim, name)(dps, **kwargs), getattr(torch.optim, name)(tps, **kwargs)
    _step_both(dopt, topt, dps, tps, grads)
    return dps, tps, dopt, topt


@pytest.mark.parametrize("kwargs", ADAFACTOR, ids=str)
def test_adafactor_matches_torch_for_12_steps(kwargs):
    dps, tps, dopt, topt = _pair("Adafactor", kwargs, SHAPES, 12)
    assert _max_diff(dps, tps) <= TOL
    for p, q in zip(dps, tps):  # factored state for 2+ dims, a full variance below, under torch's keys
        mine, theirs = dopt.state[p], topt.state[q]
        assert set(mine) == set(theirs)
        assert mine["step"] == int(theirs["step"]) == 12
        for key in set(theirs) - {"step"}:
            np.testing.assert_allclose(mine[key], theirs[key].numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs", MUON, ids=str)
def test_muon_matches_torch_for_12_steps(kwargs):
    dps, tps, dopt, topt = _pair("Muon", kwargs, MATRICES, 12)
    assert _max_diff(dps, tps) <= TOL
    for p, q in zip(dps, tps):
        np.testing.assert_allclose(
            dopt.state[p]["momentum_buffer"], topt.state[q]["momentum_buffer"].numpy(), rtol=0, atol=TOL
        )


@pytest.mark.parametrize("shape", [(4, 6), (7, 3), (16, 16), (32, 20)])
def test_newton_schulz_gives_torchs_bfloat16_bits(shape):
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = np.random.default_rng(3).standard_normal(shape)
    expected = _zeropower_via_newtonschulz(torch.tensor(g), (3.4445, -4.7750, 2.0315), 5, 1e-7).float().numpy()
    assert np.array_equal(zeropower_via_newtonschulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7), expected)


def test_round_bfloat16_is_torchs_conversion():
    x = np.concatenate([np.random.default_rng(4).standard_normal(1000) * 10.0 ** np.arange(-5, 5).repeat(100),
                        [0.0, -0.0, np.inf, -np.inf, 1 + 2**-8, 1 + 3 * 2**-8]]).astype(np.float32)  # fmt: skip
    expected = torch.tensor(x).bfloat16().float().numpy()
    assert np.array_equal(_round_bfloat16(x), expected)
    assert np.isnan(_round_bfloat16(np.array([np.nan], np.float32))).all()


@pytest.mark.parametrize(
    "name,kwargs,shapes",
    [("Adafactor", dict(lr=0.1, weight_decay=0.1), SHAPES), ("Muon", dict(lr=0.02), MATRICES)],
)
def test_state_dict_round_trip_and_layout(name, kwargs, shapes, tmp_path):
    init, grads = _data(np.random.default_rng(5), 10, shapes)

    def make(arrays):
        ps = [dg.tensor(a.copy(), requires_grad=True) for a in arrays]
        return ps, getattr(optim, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}], **kwargs)

    assert_resumes_identically(make, init, grads, tmp_path / "opt.dg")
    dps, tps, dopt, topt = _pair(name, kwargs, shapes, 3)
    mine, theirs = dopt.state_dict(), topt.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert {i: set(s) for i, s in mine["state"].items()} == {i: set(s) for i, s in theirs["state"].items()}


def test_adafactor_loads_torchs_state_and_refuses_a_wrong_factor_shape():
    init, grads = _data(np.random.default_rng(7), 8, SHAPES)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.Adafactor(tps, lr=0.1)
    _step_both(optim.SGD([dg.zeros(1, requires_grad=True)]), topt, [], tps, grads[:4])
    sd = topt.state_dict()
    dps = [dg.tensor(q.detach().numpy().copy(), requires_grad=True) for q in tps]
    dopt = optim.Adafactor(dps, lr=0.1)
    dopt.load_state_dict(sd)
    _step_both(dopt, topt, dps, tps, grads[4:])
    assert _max_diff(dps, tps) <= TOL
    sd = dopt.state_dict()
    sd["state"][0]["row_var"] = np.zeros((4, 3))
    with pytest.raises(ConfigError, match=r"state 'row_var' has shape \(4, 3\), expected \(4, 1\)"):
        optim.Adafactor(dps).load_state_dict(sd)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda ps: optim.Adafactor(ps, beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
        (lambda ps: optim.Adafactor(ps, eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
        (lambda ps: optim.Adafactor(ps, eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
        (lambda ps: optim.Adafactor(ps, d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
        (lambda ps: optim.Adafactor(ps, weight_decay=-1), "weight_decay should be >= 0 but is: -1"),
        (lambda ps: optim.Adafactor(ps, lr=-1), "invalid learning rate"),
        (lambda ps: optim.Muon(ps, momentum=-1), "momentum should be >= 0 but is: -1"),
        (lambda ps: optim.Muon(ps, weight_decay=-1), "weight decay should be >= 0 but is: -1"),
        (lambda ps: optim.Muon(ps, adjust_lr_fn="x"), "Adjust learning rate function x is not supported"),
        (lambda ps: optim.Muon([dg.zeros(3, requires_grad=True)]), r"only supports 2D parameters .* size: \(3,\)"),
        (lambda ps: optim.LBFGS([{"params": ps[:1]}, {"params": ps[1:]}]), "doesn't support per-parameter"),
    ],
)
def test_bad_options_raise_torchs_messages(make, match):
    ps = [dg.zeros(2, 2, requires_grad=True), dg.zeros(2, 2, requires_grad=True)]
    with pytest.raises(ConfigError, match=match):
        make(ps)


def test_muon_refuses_too_many_newton_schulz_steps_at_the_step():
    p = dg.zeros(2, 2, requires_grad=True)
    opt = optim.Muon([p], ns_steps=100)
    p.grad = dg.ones(2, 2)
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        opt.step()


# ---- LBFGS ----------------------------------------------------------------------------------------------------
def _problem(lib, a, b, w0, c0):
    """A float64 least-squares fit with a smooth penalty: its closure zeroes the grads, backpropagates and
    returns the loss, as torch's LBFGS expects."""
    w = lib.tensor(w0.copy(), requires_grad=True)
    c = lib.tensor(c0.copy(), requires_grad=True)
    a, b = lib.tensor(a), lib.tensor(b)
    calls = []

    def closure():
        w.grad = c.grad = None
        r = a @ w + c - b
        loss = (r * r).sum() + 0.1 * (w * w * w * w).sum()
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    return [w, c], closure, calls


LBFGS_CONFIGS = [
    dict(),
    dict(line_search_fn="strong_wolfe"),
    dict(lr=0.5, max_iter=7, history_size=3),
    dict(lr=1, max_iter=10, history_size=2, line_search_fn="strong_wolfe", max_eval=14),
    dict(tolerance_grad=1e-3, tolerance_change=1e-4),
]


@pytest.mark.parametrize("kwargs", LBFGS_CONFIGS, ids=str)
def test_lbfgs_matches_torch_step_by_step(kwargs):
    rng = np.random.default_rng(8)
    data = (
        rng.standard_normal((12, 5)),
        rng.standard_normal((12, 1)),
        rng.standard_normal((5, 1)),
        rng.standard_normal(1),
    )
    dps, dclosure, dcalls = _problem(dg, *data)
    tps, tclosure, tcalls = _problem(torch, *data)
    dopt, topt = optim.LBFGS(dps, **kwargs), torch.optim.LBFGS(tps, **kwargs)
    for _ in range(4):
        assert float(dopt.step(dclosure)) == pytest.approx(float(topt.step(tclosure)), rel=1e-9)
        assert _max_diff(dps, tps) <= 1e-9
        assert len(dcalls) == len(tcalls)  # the same evaluations, so the same path
    np.testing.assert_allclose(dcalls, tcalls, rtol=1e-9)
    mine, theirs = dopt.state[dps[0]], topt.state[tps[0]]
    assert set(mine) == set(theirs)
    assert (mine["func_evals"], mine["n_iter"]) == (theirs["func_evals"], theirs["n_iter"])
    assert len(mine["old_dirs"]) == len(theirs["old_dirs"])
    for x, y in zip(mine["old_dirs"] + [mine["d"]], theirs["old_dirs"] + [theirs["d"]]):
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-7, atol=1e-9)


def test_lbfgs_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(9)
    data = (
        rng.standard_normal((12, 5)),
        rng.standard_normal((12, 1)),
        rng.standard_normal((5, 1)),
        rng.standard_normal(1),
    )
    ps1, closure1, _ = _problem(dg, *data)
    opt1 = optim.LBFGS(ps1, max_iter=3, line_search_fn="strong_wolfe")
    for _ in range(2):
        opt1.step(closure1)
    saved = opt1.state_dict()
    assert set(saved["state"]) == {0} and "old_dirs" in saved["state"][0]
    ps2, closure2, _ = _problem(dg, *data)
    for p, q in zip(ps2, ps1):
        p.array[...] = q.array
    opt2 = optim.LBFGS(ps2, max_iter=3, line_search_fn="strong_wolfe")
    opt2.load_state_dict(saved)
    for _ in range(2):
        opt1.step(closure1)
        opt2.step(closure2)
    for p, q in zip(ps1, ps2):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())


def test_lbfgs_stops_at_once_when_the_gradient_is_zero_and_refuses_an_unknown_line_search():
    p = dg.zeros(3, requires_grad=True)

    def closure():
        p.grad = None
        loss = (p * p).sum()
        loss.backward()
        return loss

    opt = optim.LBFGS([p])
    assert float(opt.step(closure)) == 0.0 and opt.state[p] == {"func_evals": 1, "n_iter": 0}
    p.array[...] = 1.0
    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        optim.LBFGS([p], line_search_fn="armijo").step(closure)


@pytest.mark.parametrize("name", ["adafactor", "muon"])
def test_the_sharded_store_refuses_updates_that_need_the_whole_parameter(name):
    from distgraph.distributed.zero import ShardedParameters
    from distgraph.errors import DistributedError

    with pytest.raises(DistributedError, match=f"{name}'s update needs each parameter whole"):
        ShardedParameters([], 0, 1, None, name, [])
