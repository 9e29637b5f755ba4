"""NAdam, RAdam, Adamax, Adadelta, Rprop and ASGD against torch (float64 parameters, 12 steps, three param
groups with their own options), under both torch default dtypes (their scalar state follows it), state
dict round trips, torch's state dicts, and bad input."""

import itertools

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError
from tests.optim.test_optimizers import _data, _max_diff, _step_both, assert_resumes_identically

torch = pytest.importorskip("torch")
TOL = 1e-12


def _grid(lr, **axes):
    return [dict(lr=lr, **dict(zip(axes, values))) for values in itertools.product(*axes.values())]


CONFIGS = (
    [
        ("NAdam", c)
        for c in _grid(
            0.01,
            betas=[(0.9, 0.999), (0.5, 0.9)],
            weight_decay=[0.0, 0.1],
            decoupled_weight_decay=[False, True],
            maximize=[False, True],
        )
    ]  # fmt: skip
    + [("NAdam", dict(lr=0.01, momentum_decay=0.05, eps=1e-3))]
    + [
        ("RAdam", c)
        for c in _grid(
            0.01,
            betas=[(0.9, 0.999), (0.5, 0.6)],
            weight_decay=[0.0, 0.1],
            decoupled_weight_decay=[False, True],
            maximize=[False, True],
        )
    ]  # fmt: skip
    + [
        ("Adamax", c)
        for c in _grid(0.01, betas=[(0.9, 0.999), (0.5, 0.9)], weight_decay=[0.0, 0.1], maximize=[False, True])
    ]  # fmt: skip
    + [
        ("Adadelta", c)
        for c in _grid(0.5, rho=[0.9, 0.5], eps=[1e-6, 1e-2], weight_decay=[0.0, 0.1], maximize=[False, True])
    ]  # fmt: skip
    + [
        ("Rprop", c)
        for c in _grid(
            0.01, etas=[(0.5, 1.2), (0.3, 1.5)], step_sizes=[(1e-6, 50), (1e-3, 0.02)], maximize=[False, True]
        )
    ]  # fmt: skip
    + [
        ("ASGD", c)
        for c in _grid(
            0.01, lambd=[1e-4, 0.05], alpha=[0.75, 0.5], t0=[1e6, 4], weight_decay=[0.0, 0.1], maximize=[False, True]
        )
    ]  # fmt: skip
)
GROUP_OPTIONS = {  # the second and third param groups change an option each
    "NAdam": ({"lr": 0.003, "momentum_decay": 0.01}, {"weight_decay": 0.2, "betas": (0.8, 0.95)}),
    "RAdam": ({"lr": 0.003, "betas": (0.6, 0.7)}, {"weight_decay": 0.2}),
    "Adamax": ({"lr": 0.003, "eps": 1e-2}, {"weight_decay": 0.2}),
    "Adadelta": ({"lr": 0.1, "rho": 0.5}, {"weight_decay": 0.2}),
    "Rprop": ({"lr": 0.003, "etas": (0.2, 1.1)}, {"step_sizes": (1e-4, 0.5)}),
    "ASGD": ({"lr": 0.003, "t0": 3}, {"weight_decay": 0.2, "lambd": 0.1}),
}


def _id(name, kwargs):
    return name + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items() if k != "lr")


def _groups(name, ps):
    second, third = GROUP_OPTIONS[name]
    return [{"params": ps[:1]}, {"params": ps[1:2], **second}, {"params": ps[2:], **third}]


@pytest.fixture(params=["float32", "float64"])
def default_dtype(request):
    """torch keeps NAdam's mu_product and ASGD's eta and mu in its default dtype's precision: both ways."""
    before, before_torch = dg.get_default_dtype(), torch.get_default_dtype()
    dg.set_default_dtype(request.param)
    torch.set_default_dtype(getattr(torch, request.param))
    yield request.param
    dg.set_default_dtype(before)
    torch.set_default_dtype(before_torch)


def _pair(name, kwargs, init, grouped=True):
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    make = (lambda ps: _groups(name, ps)) if grouped else (lambda ps: ps)
    return dps, tps, getattr(optim, name)(make(dps), **kwargs), getattr(torch.optim, name)(make(tps), **kwargs)


def _assert_same_state(dopt, topt, dps, tps):
    for p, q in zip(dps, tps):
        mine, theirs = dopt.state[p], topt.state[q]
        assert set(mine) == set(theirs)
        for key, value in theirs.items():
            if key == "step":
                assert mine[key] == int(value)
            else:
                np.testing.assert_allclose(mine[key], value.numpy(), rtol=0, atol=TOL, err_msg=key)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[_id(*c) for c in CONFIGS])
def test_optimizer_matches_torch_for_12_steps_with_three_param_groups(name, kwargs, default_dtype):
    init, grads = _data(np.random.default_rng(0), 12)
    dps, tps, dopt, topt = _pair(name, kwargs, init)
    _step_both(dopt, topt, dps, tps, grads)
    assert _max_diff(dps, tps) <= TOL
    _assert_same_state(dopt, topt, dps, tps)


NAMES = list(GROUP_OPTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_torch(name):
    p = dg.zeros(2, requires_grad=True)
    mine, theirs = getattr(optim, name)([p]).defaults, getattr(torch.optim, name)([torch.zeros(2)]).defaults
    assert {k: theirs[k] for k in mine} == mine


@pytest.mark.parametrize("name", NAMES)
def test_float32_parameters_stay_float32_and_track_torch(name):
    init, grads = _data(np.random.default_rng(1), 12)
    init = [a.astype(np.float32) for a in init]
    grads = [[g.astype(np.float32) for g in gs] for gs in grads]
    dps, tps, dopt, topt = _pair(name, {}, init, grouped=False)
    _step_both(dopt, topt, dps, tps, grads)
    assert all(p.dtype == dg.float32 for p in dps)
    assert all(v.dtype == np.float32 for p in dps for v in dopt.state[p].arrays().values() if hasattr(v, "dtype"))
    assert _max_diff(dps, tps) <= 1e-5


STATEFUL = [
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1)),
    ("Adamax", dict(lr=0.01)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.05)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.01, t0=3, lambd=0.01)),
]


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[_id(*s) for s in STATEFUL])
def test_state_dict_round_trip_through_a_file_continues_identically(name, kwargs, tmp_path):
    """Save after 5 steps, load into a fresh optimizer on fresh parameters, run 7 more: the same bits as
    12 uninterrupted steps."""
    init, grads = _data(np.random.default_rng(5), 12)

    def make(arrays):
        ps = [dg.tensor(a.copy(), requires_grad=True) for a in arrays]
        return ps, getattr(optim, name)(_groups(name, ps), **kwargs)

    assert_resumes_identically(make, init, grads, tmp_path / "opt.dg")


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[_id(*s) for s in STATEFUL])
def test_state_dict_layout_matches_torch(name, kwargs):
    init, grads = _data(np.random.default_rng(6), 3)
    dps, tps, dopt, topt = _pair(name, kwargs, init)
    _step_both(dopt, topt, dps, tps, grads)
    mine, theirs = dopt.state_dict(), topt.state_dict()
    assert [g["params"] for g in mine["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    assert {i: set(s) for i, s in mine["state"].items()} == {i: set(s) for i, s in theirs["state"].items()}
    for g, h in zip(mine["param_groups"], theirs["param_groups"]):
        assert {k: g[k] for k in g} == {k: h[k] for k in g}


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[_id(*s) for s in STATEFUL])
def test_a_torch_optimizers_state_dict_continues_in_distgraph_as_in_torch(name, kwargs, default_dtype):
    """torch's state dict as it comes (torch tensors, 0-d scalar state), loaded after 4 torch steps."""
    init, grads = _data(np.random.default_rng(7), 10)
    dps, tps, dopt, topt = _pair(name, kwargs, init)
    for g in grads[:4]:
        for q, gi in zip(tps, g):
            q.grad = torch.tensor(gi)
        topt.step()
    for p, q in zip(dps, tps):
        p.array[...] = q.detach().numpy()
    dopt.load_state_dict(topt.state_dict())
    assert all(
        isinstance(v, float) for st in dopt.state.values() for k, v in st.arrays().items() if k in dopt.scalar_state
    )
    _step_both(dopt, topt, dps, tps, grads[4:])
    assert _max_diff(dps, tps) <= TOL
    _assert_same_state(dopt, topt, dps, tps)


def test_rprop_reads_lr_only_on_its_first_step():
    """Rprop's lr is each weight's initial step size: changing it later (a scheduler) changes nothing, as torch."""
    init, grads = _data(np.random.default_rng(8), 6)
    dps, tps, dopt, topt = _pair("Rprop", dict(lr=0.01), init, grouped=False)
    _step_both(dopt, topt, dps, tps, grads[:3])
    for o in (dopt, topt):
        o.param_groups[0]["lr"] = 5.0
    _step_both(dopt, topt, dps, tps, grads[3:])
    assert _max_diff(dps, tps) <= TOL


def test_bad_options_raise_config_errors_naming_the_optimizer():
    p = dg.zeros(2, requires_grad=True)
    cases = [
        (lambda: optim.NAdam([p], lr=-1), "NAdam: invalid learning rate lr=-1"),
        (lambda: optim.NAdam([p], momentum_decay=-0.1), "NAdam: invalid momentum_decay value -0.1"),
        (lambda: optim.NAdam([p], betas=(0.9, 1.0)), "NAdam: invalid betas"),
        (lambda: optim.RAdam([p], eps=-1), "RAdam: invalid eps value"),
        (lambda: optim.Adamax([p], weight_decay=-1), "Adamax: invalid weight_decay value -1"),
        (lambda: optim.Adadelta([p], rho=1.5), "Adadelta: invalid rho value 1.5"),
        (lambda: optim.Adadelta([p], eps=-1), "Adadelta: invalid eps value"),
        (lambda: optim.Rprop([p], etas=(1.2, 0.5)), "Rprop: invalid etas"),
        (lambda: optim.Rprop([p], step_sizes=(1.0, 0.1)), "Rprop: invalid step_sizes"),
        (lambda: optim.ASGD([p], weight_decay=-0.1), "ASGD: invalid weight_decay value"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError, match=message):
            make()
