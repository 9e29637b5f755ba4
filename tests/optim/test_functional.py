"""The array-level updates the parameter store reuses: plain arrays in place, lazily made state under
torch's names, and `make_optimizer_spec` rebuilding exactly the update an Optimizer runs."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.optim.functional import UPDATES, make_optimizer_spec

OPTIMIZERS = [
    ("sgd", optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam", optim.Adam, dict(lr=0.01, amsgrad=True, maximize=True)),
    ("adam", optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("rmsprop", optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True)),
    ("adagrad", optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    ("nadam", optim.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("radam", optim.RAdam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("adamax", optim.Adamax, dict(lr=0.01, weight_decay=0.1)),
    ("adadelta", optim.Adadelta, dict(lr=0.5, rho=0.8)),
    ("rprop", optim.Rprop, dict(lr=0.01, etas=(0.4, 1.3))),
    ("asgd", optim.ASGD, dict(lr=0.01, t0=4, lambd=0.01)),
    ("adafactor", optim.Adafactor, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("muon", optim.Muon, dict(lr=0.02, nesterov=False)),
]
STATE_KEYS = {
    "sgd": {"momentum_buffer"},
    "adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "rmsprop": {"step", "square_avg", "momentum_buffer", "grad_avg"},
    "adagrad": {"step", "sum"},
    "nadam": {"step", "mu_product", "exp_avg", "exp_avg_sq"},
    "radam": {"step", "exp_avg", "exp_avg_sq"},
    "adamax": {"step", "exp_avg", "exp_inf"},
    "adadelta": {"step", "square_avg", "acc_delta"},
    "rprop": {"step", "prev", "step_size"},
    "muon": {"momentum_buffer"},
    "asgd": {"step", "eta", "mu", "ax"},
}


def test_sgd_momentum_on_plain_arrays_by_hand():
    param, grad, state = np.ones(3), np.full(3, 0.5), {}
    UPDATES["sgd"](param, grad, state, lr=0.1, momentum=0.9)
    UPDATES["sgd"](param, grad, state, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(param, 1 - 0.1 * 0.5 - 0.1 * (0.9 * 0.5 + 0.5), rtol=1e-15)
    np.testing.assert_allclose(state["momentum_buffer"], 0.9 * 0.5 + 0.5, rtol=1e-15)


def test_adam_first_step_moves_each_weight_by_lr():
    """Bias correction makes Adam's first step lr · sign(grad) (up to eps)."""
    param, grad, state = np.zeros(4), np.array([3.0, -0.2, 1e-3, -50.0]), {}
    UPDATES["adam"](param, grad, state, lr=0.01, betas=(0.9, 0.999), eps=1e-12, weight_decay=0, amsgrad=False,
                    maximize=False)  # fmt: skip
    np.testing.assert_allclose(param, -0.01 * np.sign(grad), rtol=1e-8)
    assert state["step"] == 1


@pytest.mark.parametrize("name,cls,kwargs", OPTIMIZERS, ids=[o[1].__name__ for o in OPTIMIZERS])
def test_spec_rebuilds_the_optimizers_update_bit_for_bit(name, cls, kwargs):
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (3, 4)] if name == "muon" else [(5, 4), (4,)]  # Muon takes matrices only
    init = [rng.standard_normal(s) for s in shapes]
    params = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.5 * kwargs["lr"]}], **kwargs)
    update_name, groups = make_optimizer_spec(opt)
    assert update_name == name and len(groups) == 2 and groups[1]["lr"] == 0.5 * kwargs["lr"]
    arrays, states = [a.copy() for a in init], [{}, {}]
    for _ in range(10):
        grads = [rng.standard_normal(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = dg.tensor(g)
        opt.step()
        for arr, g, st, hyper in zip(arrays, grads, states, groups):
            UPDATES[update_name](arr, g, st, **hyper)
    for p, arr, st in zip(params, arrays, states):
        assert np.array_equal(p.detach().numpy(), arr)
        factored = {"step", "row_var", "col_var"} if arr.ndim > 1 else {"step", "variance"}  # Adafactor's
        assert set(st) == (factored if name == "adafactor" else STATE_KEYS[name])
        for k, v in st.items():
            assert np.array_equal(opt.state[p][k], v)


@pytest.mark.parametrize("name,cls,kwargs", OPTIMIZERS, ids=[o[1].__name__ for o in OPTIMIZERS])
def test_updates_run_on_the_parameters_device(name, cls, kwargs, device):
    rng = np.random.default_rng(1)
    cpu = [dg.tensor(rng.standard_normal((8, 3)), requires_grad=True)]
    dev = [dg.tensor(cpu[0].detach().numpy().copy(), device=device, requires_grad=True)]
    opts = [cls(cpu, **kwargs), cls(dev, **kwargs)]
    for _ in range(5):
        g = rng.standard_normal((8, 3))
        cpu[0].grad, dev[0].grad = dg.tensor(g), dg.tensor(g, device=device)
        for o in opts:
            o.step()
    xp = dg.device(device).xp
    assert all(
        isinstance(v, xp.ndarray) for v in opts[1].state[dev[0]].arrays().values() if not isinstance(v, int | float)
    )
    np.testing.assert_allclose(dev[0].detach().to("cpu").numpy(), cpu[0].detach().numpy(), rtol=1e-12, atol=1e-12)


def test_updates_table_names_every_optimizer_class():
    assert set(UPDATES) == {cls.update_name for _, cls, _ in OPTIMIZERS}
    for _, cls, _ in OPTIMIZERS:
        assert cls.update_name in UPDATES
