"""Each optimizer against torch for 20 steps on the same parameters and gradients (float64)."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)
SHAPES = [(4, 3), (3,)]

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
]


def run_both(name, kwargs, steps=20, groups=False):
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    if groups:
        dopt = getattr(optim, name)([{"params": [dps[0]]}, {"params": [dps[1]], "lr": 0.5 * kwargs["lr"]}], **kwargs)
        topt = getattr(torch.optim, name)(
            [{"params": [tps[0]]}, {"params": [tps[1]], "lr": 0.5 * kwargs["lr"]}], **kwargs
        )
    else:
        dopt, topt = getattr(optim, name)(dps, **kwargs), getattr(torch.optim, name)(tps, **kwargs)
    for g in grads:
        for p, q, gi in zip(dps, tps, g):
            p.grad, q.grad = dg.tensor(gi), torch.tensor(gi)
        dopt.step()
        topt.step()
    return dps, tps, dopt


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_torch_for_20_steps(name, kwargs):
    dps, tps, _ = run_both(name, kwargs)
    for p, q in zip(dps, tps):
        assert np.abs(p.detach().numpy() - q.detach().numpy()).max() <= 1e-12


def test_param_groups_with_different_lrs():
    dps, tps, _ = run_both("Adam", dict(lr=0.02), groups=True)
    for p, q in zip(dps, tps):
        assert np.abs(p.detach().numpy() - q.detach().numpy()).max() <= 1e-12


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True))])
def test_state_dict_round_trip_continues_identically(name, kwargs, tmp_path):
    init = rng.standard_normal((3, 3))
    grads = [rng.standard_normal((3, 3)) for _ in range(10)]

    def steps(opt, p, gs):
        for g in gs:
            p.grad = dg.tensor(g)
            opt.step()

    p1 = dg.tensor(init.copy(), requires_grad=True)
    o1 = getattr(optim, name)([p1], **kwargs)
    steps(o1, p1, grads)
    p2 = dg.tensor(init.copy(), requires_grad=True)
    o2 = getattr(optim, name)([p2], **kwargs)
    steps(o2, p2, grads[:5])
    dg.save({"opt": o2.state_dict(), "p": p2.detach()}, tmp_path / "opt.dg")
    saved = dg.load(tmp_path / "opt.dg")
    p3 = dg.tensor(saved["p"].numpy().copy(), requires_grad=True)
    o3 = getattr(optim, name)([p3], **kwargs)
    o3.load_state_dict(saved["opt"])
    steps(o3, p3, grads[5:])
    assert np.array_equal(p3.detach().numpy(), p1.detach().numpy())


def test_bad_options_raise_config_errors():
    p = dg.zeros(2, requires_grad=True)
    with pytest.raises(ConfigError, match="invalid learning rate"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ConfigError, match="unknown param group option 'momentun'"):
        optim.SGD([{"params": [p], "momentun": 0.9}], lr=0.1)
    with pytest.raises(ConfigError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)


def test_functional_update_works_on_plain_arrays():
    from distgraph.optim.functional import UPDATES

    param, grad, state = np.ones(3), np.full(3, 0.5), {}
    UPDATES["sgd"](param, grad, state, lr=0.1, momentum=0.9)
    UPDATES["sgd"](param, grad, state, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(param, 1 - 0.1 * 0.5 - 0.1 * (0.9 * 0.5 + 0.5))
