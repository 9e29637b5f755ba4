"""Each scheduler's lr sequence against torch's for 40 steps."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.optim import lr_scheduler as dls

torch = pytest.importorskip("torch")
tls = torch.optim.lr_scheduler

SCHEDULERS = [
    ("StepLR", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    ("MultiStepLR", lambda m, o: m.MultiStepLR(o, milestones=[5, 12, 12, 30], gamma=0.3)),
    ("ExponentialLR", lambda m, o: m.ExponentialLR(o, gamma=0.93)),
    ("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    ("LinearLR", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8)),
    ("LambdaLR", lambda m, o: m.LambdaLR(o, lambda e: 1 / (1 + e))),
    ("OneCycleLR", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=41)),
    (
        "OneCycleLR-linear-3",
        lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=41, anneal_strategy="linear", three_phase=True),
    ),
    (
        "SequentialLR",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.ExponentialLR(o, gamma=0.9)], milestones=[5]
        ),
    ),
]


@pytest.mark.parametrize("name,make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_scheduler_matches_torch(name, make, opt):
    kw = dict(lr=0.1, momentum=0.9) if opt == "SGD" else dict(lr=0.1)
    dopt = getattr(optim, opt)([dg.zeros(2, requires_grad=True)], **kw)
    topt = getattr(torch.optim, opt)([torch.zeros(2, requires_grad=True)], **kw)
    ds, ts = make(dls, dopt), make(tls, topt)
    for _ in range(40):
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        dopt.step()
        topt.step()
        ds.step()
        ts.step()
    if "betas" in topt.param_groups[0]:
        assert dopt.param_groups[0]["betas"][0] == pytest.approx(topt.param_groups[0]["betas"][0], rel=1e-12)


def test_reduce_on_plateau_matches_torch():
    dopt = optim.SGD([dg.zeros(2, requires_grad=True)], lr=1.0)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0)
    ds = dls.ReduceLROnPlateau(dopt, patience=2, cooldown=1, factor=0.5, min_lr=0.01)
    ts = tls.ReduceLROnPlateau(topt, patience=2, cooldown=1, factor=0.5, min_lr=0.01)
    metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    for m in metrics:
        ds.step(m)
        ts.step(m)
        assert dopt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD([dg.zeros(2, requires_grad=True)], lr=0.1)
    s = dls.StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(4):
        s.step()
    state = s.state_dict()
    opt2 = optim.SGD([dg.zeros(2, requires_grad=True)], lr=0.1)
    s2 = dls.StepLR(opt2, step_size=3, gamma=0.5)
    s2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(5):
        s.step()
        s2.step()
    assert s.get_last_lr() == s2.get_last_lr()
