"""Each optimizer against torch for 20 steps on the same parameters and gradients (float64), every
option combination that changes the math; param groups; closures; state_dict round trips; bad input."""

import itertools

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError

torch = pytest.importorskip("torch")
SHAPES = [(4, 3), (3,), ()]
TOL = 1e-12


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


SGD_CONFIGS = [
    dict(lr=0.1, **c)
    for c in _grid(
        momentum=[0.0, 0.9],
        dampening=[0.0, 0.3],
        nesterov=[False, True],
        weight_decay=[0.0, 0.05],
        maximize=[False, True],
    )  # fmt: skip
    if not (c["nesterov"] and (c["momentum"] == 0 or c["dampening"] != 0))
]
ADAM_CONFIGS = [
    dict(lr=0.01, **c)
    for c in _grid(
        betas=[(0.9, 0.999), (0.5, 0.9)], weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]
    )  # fmt: skip
]
RMSPROP_CONFIGS = [
    dict(lr=0.01, **c)
    for c in _grid(
        alpha=[0.99, 0.3], momentum=[0.0, 0.9], centered=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True]
    )  # fmt: skip
]
ADAGRAD_CONFIGS = [
    dict(lr=0.1, **c)
    for c in _grid(
        lr_decay=[0.0, 0.05], weight_decay=[0.0, 0.1], initial_accumulator_value=[0.0, 0.5], maximize=[False, True]
    )  # fmt: skip
]
CONFIGS = (
    [("SGD", c) for c in SGD_CONFIGS]
    + [("Adam", c) for c in ADAM_CONFIGS]
    + [("Adam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True, amsgrad=True))]
    + [("AdamW", c) for c in ADAM_CONFIGS]
    + [("AdamW", dict(lr=0.01))]  # AdamW's default weight decay (1e-2)
    + [("RMSprop", c) for c in RMSPROP_CONFIGS]
    + [("Adagrad", c) for c in ADAGRAD_CONFIGS]
    + [("Adagrad", dict(lr=0.1, eps=1e-3))]
)


def _id(name, kwargs):
    return name + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items() if k != "lr")


def _data(rng, steps, shapes=SHAPES):
    return [rng.standard_normal(s) for s in shapes], [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _step_both(dopt, topt, dps, tps, grads):
    for g in grads:
        for p, q, gi in zip(dps, tps, g):
            p.grad, q.grad = dg.tensor(gi), torch.tensor(gi)
        dopt.step()
        topt.step()


def _max_diff(dps, tps):
    return max(float(np.abs(p.detach().numpy() - q.detach().numpy()).max()) for p, q in zip(dps, tps))


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[_id(*c) for c in CONFIGS])
def test_optimizer_matches_torch_for_20_steps(name, kwargs):
    init, grads = _data(np.random.default_rng(0), 20)
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    dopt, topt = getattr(optim, name)(dps, **kwargs), getattr(torch.optim, name)(tps, **kwargs)
    _step_both(dopt, topt, dps, tps, grads)
    assert _max_diff(dps, tps) <= TOL
    for p, q in zip(dps, tps):  # same state, under torch's key names
        mine, theirs = dopt.state[p], topt.state[q]
        assert set(mine) == set(theirs)
        assert mine["step"] == int(theirs["step"]) if "step" in theirs else True
        for key, value in theirs.items():
            if key != "step":
                np.testing.assert_allclose(mine[key], value.numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_float32_parameters_stay_float32_and_track_torch(name):
    init, grads = _data(np.random.default_rng(1), 20)
    init = [a.astype(np.float32) for a in init]
    grads = [[g.astype(np.float32) for g in gs] for gs in grads]
    kwargs = dict(lr=0.01, momentum=0.9) if name in ("SGD", "RMSprop") else dict(lr=0.01)
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    dopt, topt = getattr(optim, name)(dps, **kwargs), getattr(torch.optim, name)(tps, **kwargs)
    _step_both(dopt, topt, dps, tps, grads)
    assert all(p.dtype == dg.float32 for p in dps)
    assert all(v.dtype == np.float32 for p in dps for k, v in dopt.state[p].arrays().items() if k != "step")
    assert _max_diff(dps, tps) <= 1e-5


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_param_groups_with_different_lrs_and_options(name):
    init, grads = _data(np.random.default_rng(2), 20)
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    extra = {"SGD": {"momentum": 0.5}, "Adam": {"amsgrad": True}, "RMSprop": {"centered": True},
             "Adagrad": {"lr_decay": 0.1}}[name]  # fmt: skip

    def groups(ps):
        return [{"params": ps[:1]}, {"params": ps[1:2], "lr": 0.003, **extra}, {"params": ps[2:], "weight_decay": 0.2}]

    dopt, topt = getattr(optim, name)(groups(dps), lr=0.02), getattr(torch.optim, name)(groups(tps), lr=0.02)
    assert [g["lr"] for g in dopt.param_groups] == [0.02, 0.003, 0.02]
    _step_both(dopt, topt, dps, tps, grads)
    assert _max_diff(dps, tps) <= TOL


def test_add_param_group_and_parameters_without_grad():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(3), rng.standard_normal(2)
    dp, dq = dg.tensor(a, requires_grad=True), dg.tensor(b, requires_grad=True)
    tp, tq = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    dopt, topt = optim.Adam([dp], lr=0.1), torch.optim.Adam([tp], lr=0.1)
    dopt.add_param_group({"params": dq, "lr": 0.01})
    topt.add_param_group({"params": tq, "lr": 0.01})
    for i in range(5):
        g = rng.standard_normal(3)
        dp.grad, tp.grad = dg.tensor(g), torch.tensor(g)
        if i >= 3:  # the second parameter only gets gradients from step 4 on
            h = rng.standard_normal(2)
            dq.grad, tq.grad = dg.tensor(h), torch.tensor(h)
        dopt.step()
        topt.step()
        if i < 3:
            assert dq not in dopt.state and dopt.state_dict()["state"].keys() == {0}
    assert _max_diff([dp, dq], [tp, tq]) <= TOL
    assert dopt.state[dq]["step"] == 2


def test_closure_is_evaluated_with_grad_enabled_and_its_loss_returned():
    w = dg.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with dg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 5.0
    np.testing.assert_allclose(w.detach().numpy(), [0.8, -1.6])


def test_step_does_not_record_a_graph_and_bumps_the_version():
    w = dg.tensor(np.ones(3), requires_grad=True)
    w.grad = dg.tensor(np.ones(3))
    before = w._version
    optim.SGD([w], lr=0.5).step()
    assert w.grad_fn is None and w.requires_grad and w._version == before + 1


def test_zero_grad_sets_to_none_or_zeroes_in_place():
    w = dg.tensor(np.ones(2), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    w.grad = dg.tensor(np.ones(2))
    grad = w.grad
    opt.zero_grad(set_to_none=False)
    assert w.grad is grad and not grad.numpy().any()
    opt.zero_grad()
    assert w.grad is None


def test_grad_array_is_never_written():
    rng = np.random.default_rng(4)
    for name, kwargs in CONFIGS[::7]:
        w = dg.tensor(rng.standard_normal(4), requires_grad=True)
        g = rng.standard_normal(4)
        w.grad = dg.tensor(g.copy())
        opt = getattr(optim, name)([w], **kwargs)
        opt.step()
        opt.step()
        assert np.array_equal(w.grad.numpy(), g), name


STATEFUL = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
]


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[_id(*s) for s in STATEFUL])
def test_state_dict_round_trip_through_a_file_continues_identically(name, kwargs, tmp_path):
    init, grads = _data(np.random.default_rng(5), 10)

    def make(arrays):
        ps = [dg.tensor(a.copy(), requires_grad=True) for a in arrays]
        return ps, getattr(optim, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.05}], **kwargs)

    assert_resumes_identically(make, init, grads, tmp_path / "opt.dg")


@pytest.mark.parametrize("name,kwargs", STATEFUL, ids=[_id(*s) for s in STATEFUL])
def test_state_dict_layout_matches_torch(name, kwargs):
    init, grads = _data(np.random.default_rng(6), 3)
    dps = [dg.tensor(a, requires_grad=True) for a in init]
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    dopt = getattr(optim, name)([{"params": dps[:1]}, {"params": dps[1:], "lr": 0.5}], **kwargs)
    topt = getattr(torch.optim, name)([{"params": tps[:1]}, {"params": tps[1:], "lr": 0.5}], **kwargs)
    _step_both(dopt, topt, dps, tps, grads)
    mine, theirs = dopt.state_dict(), topt.state_dict()
    assert [g["params"] for g in mine["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    assert mine["state"].keys() == theirs["state"].keys()
    for i in mine["state"]:
        assert mine["state"][i].keys() == theirs["state"][i].keys()
    for g, h in zip(mine["param_groups"], theirs["param_groups"]):
        assert list(g) == list(h) and g == h  # torch's keys (foreach, fused, ... too), in torch's order


def test_torch_state_dict_loads_into_distgraph():
    """A torch optimizer's state (tensors converted to numpy) continues in distgraph as in torch."""
    init, grads = _data(np.random.default_rng(7), 8)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.Adam(tps, lr=0.01)
    _step_both(optim.SGD([dg.zeros(1, requires_grad=True)]), topt, [], tps, grads[:4])
    sd = topt.state_dict()
    sd = {
        "param_groups": sd["param_groups"],
        "state": {i: {k: v.numpy() for k, v in s.items()} for i, s in sd["state"].items()},
    }
    dps = [dg.tensor(q.detach().numpy().copy(), requires_grad=True) for q in tps]
    dopt = optim.Adam(dps, lr=0.01)
    dopt.load_state_dict(sd)
    _step_both(dopt, topt, dps, tps, grads[4:])
    assert _max_diff(dps, tps) <= TOL
    # the group is torch's, its implementation options (foreach, capturable, ...) included
    assert {k: v for k, v in dopt.param_groups[0].items() if k != "params"} == {
        k: v for k, v in sd["param_groups"][0].items() if k != "params"
    }


def test_load_state_dict_rejects_mismatched_structure():
    a, b = dg.zeros(2, requires_grad=True), dg.zeros(3, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = dg.ones(2), dg.ones(3)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ConfigError, match=r"different number of parameter groups \(1; the optimizer has 2\)"):
        optim.Adam([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ConfigError, match=r"doesn't match the size of optimizer's group \(group 0: 2 parameters"):
        optim.Adam([a]).load_state_dict(sd)
    with pytest.raises(ConfigError, match="'exp_avg' has shape \\(2,\\), parameter has \\(3,\\)"):
        optim.Adam([b, a]).load_state_dict(sd)


def test_bad_options_raise_config_errors_naming_the_option():
    p = dg.zeros(2, requires_grad=True)
    cases = [
        (lambda: optim.SGD([p], lr=-1), "SGD: invalid learning rate lr=-1"),
        (lambda: optim.Adam([{"params": [p], "lr": -0.5}]), "Adam: invalid learning rate lr=-0.5"),
        (lambda: optim.SGD([p], lr=0.1, nesterov=True), "nesterov momentum requires a momentum > 0"),
        (lambda: optim.SGD([p], lr=0.1, momentum=-0.1), "invalid momentum value -0.1"),
        (lambda: optim.Adam([p], betas=(0.9, 1.0)), "invalid betas"),
        (lambda: optim.AdamW([p], eps=-1e-8), "AdamW: invalid eps value"),
        (lambda: optim.Adam([p], weight_decay=-1), "invalid weight_decay value -1"),
        (lambda: optim.RMSprop([p], alpha=-0.1), "RMSprop: invalid alpha value"),
        (lambda: optim.Adagrad([p], lr_decay=-1), "Adagrad: invalid lr_decay value"),
        (lambda: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda: optim.SGD(p, lr=0.1), "got a single Tensor"),
        (lambda: optim.SGD([np.zeros(2)], lr=0.1), "can only optimize Tensors, got ndarray"),
        (lambda: optim.SGD([p * 2], lr=0.1), "non-leaf"),
        (lambda: optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1), "more than one parameter group"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError, match=message):
            make()
    opt = optim.SGD([p], lr=0.1)  # a key SGD does not take is kept, not refused (torch's rule: test_optim_group_keys)
    opt.add_param_group({"params": [dg.zeros(1, requires_grad=True)], "betas": (0.9, 0.99)})
    assert opt.param_groups[1]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError):  # ConfigError is also a ValueError, as torch raises
        optim.SGD([p], lr=-1)
    assert optim.SGD([p], lr=np.float32(0.5)).param_groups[0]["lr"] == 0.5  # numpy scalars are numbers too


def test_repr_lists_each_group():
    p = dg.zeros(2, requires_grad=True)
    text = repr(optim.SGD([p], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    momentum: 0.9" in text


def test_load_state_dict_accepts_a_torch_optimizers_state_with_torch_tensors():
    """A torch optimizer's state dict holds torch tensors; loading one crashed with a bare AttributeError.
    After loading, a step continues exactly as torch's does."""
    w0 = np.random.default_rng(0).standard_normal((3, 2))
    wt = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.Adam([wt], lr=0.1)
    for _ in range(2):
        topt.zero_grad()
        (wt**2).sum().backward()
        topt.step()
    w = dg.nn.Parameter(dg.tensor(wt.detach().numpy().copy()))
    opt = dg.optim.Adam([w], lr=0.1)
    opt.load_state_dict(topt.state_dict())
    (w**2).sum().backward()
    opt.step()
    topt.zero_grad()
    (wt**2).sum().backward()
    topt.step()
    np.testing.assert_allclose(w.detach().numpy(), wt.detach().numpy(), rtol=1e-12)


def assert_resumes_identically(make, init, grads, path, split=5):
    """`make(arrays) -> (params, optimizer)`: `split` steps, a save to `path` and a load into a fresh
    optimizer on fresh parameters, then the remaining steps give the bits of uninterrupted steps."""

    def run(ps, opt, gs):
        for g in gs:
            for p, gi in zip(ps, g):
                p.grad = dg.tensor(gi)
            opt.step()

    ps1, o1 = make(init)
    run(ps1, o1, grads)
    ps2, o2 = make(init)
    run(ps2, o2, grads[:split])
    dg.save({"opt": o2.state_dict(), "params": [p.detach() for p in ps2]}, path)
    saved = dg.load(path)
    ps3, o3 = make([t.numpy() for t in saved["params"]])
    o3.load_state_dict(saved["opt"])
    run(ps3, o3, grads[split:])
    for p1, p3 in zip(ps1, ps3):
        assert np.array_equal(p1.detach().numpy(), p3.detach().numpy())
