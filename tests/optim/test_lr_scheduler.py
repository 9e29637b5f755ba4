"""Each scheduler's lr sequence against torch's for 40 steps (two param groups, SGD and Adam), resuming
from a state dict, `step(epoch)` closed forms, chained schedulers, and bad input."""

import warnings

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError, DTypeError
from distgraph.optim import lr_scheduler as dls

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's scheduler-order hints
tls = torch.optim.lr_scheduler
STEPS = 40

SCHEDULERS = [
    ("StepLR", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    ("MultiStepLR", lambda m, o: m.MultiStepLR(o, milestones=[5, 12, 12, 30], gamma=0.3)),
    ("ExponentialLR", lambda m, o: m.ExponentialLR(o, gamma=0.93)),
    ("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    ("LinearLR", lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8)),
    ("LinearLR-decay", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=30)),
    ("LambdaLR", lambda m, o: m.LambdaLR(o, lambda e: 1 / (1 + e))),
    ("LambdaLR-per-group", lambda m, o: m.LambdaLR(o, [lambda e: 0.9**e, lambda e: 1 + 0.1 * e])),
    ("OneCycleLR", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS + 1)),
    (
        "OneCycleLR-per-group",
        lambda m, o: m.OneCycleLR(
            o, max_lr=[1.0, 0.3], epochs=4, steps_per_epoch=11, pct_start=0.25, base_momentum=[0.8, 0.7]
        ),
    ),  # fmt: skip
    (
        "OneCycleLR-linear-3",
        lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS + 1, anneal_strategy="linear", three_phase=True),
    ),
    (
        "SequentialLR",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.ExponentialLR(o, gamma=0.9)], milestones=[5]
        ),
    ),
    (
        "SequentialLR-3",
        lambda m, o: m.SequentialLR(
            o,
            [m.LinearLR(o, start_factor=0.2, total_iters=4), m.CosineAnnealingLR(o, T_max=8), m.StepLR(o, 5, 0.5)],
            milestones=[4, 20],
        ),
    ),
]


def _optimizers(opt):
    """The same two-group optimizer in distgraph and torch (the second group has its own lr)."""
    kw = dict(lr=0.1, momentum=0.9) if opt == "SGD" else dict(lr=0.1)

    def groups(lib):
        return [{"params": [lib.zeros(2, requires_grad=True)]}, {"params": [lib.zeros(1, requires_grad=True)],
                                                                 "lr": 0.02}]  # fmt: skip

    return getattr(optim, opt)(groups(dg), **kw), getattr(torch.optim, opt)(groups(torch), **kw)


def _assert_same_groups(dopt, topt):
    for g, h in zip(dopt.param_groups, topt.param_groups):
        assert g["lr"] == pytest.approx(h["lr"], rel=1e-12, abs=1e-15)
        if "betas" in h:
            assert g["betas"][0] == pytest.approx(h["betas"][0], rel=1e-12)
        if "momentum" in h:
            assert g["momentum"] == pytest.approx(h["momentum"], rel=1e-12)


@pytest.mark.parametrize("name,make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_scheduler_matches_torch_for_40_steps(name, make, opt):
    dopt, topt = _optimizers(opt)
    ds, ts = make(dls, dopt), make(tls, topt)
    for _ in range(STEPS):
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        _assert_same_groups(dopt, topt)
        dopt.step()
        topt.step()
        ds.step()
        ts.step()
    assert ds.last_epoch == ts.last_epoch


@pytest.mark.parametrize("name,make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_resuming_from_a_checkpoint_continues_the_sequence(name, make, tmp_path):
    """Save optimizer + scheduler state to a file after 13 steps, build fresh ones, load, and continue: same
    lrs as torch's uninterrupted run."""
    dopt, topt = _optimizers("SGD")
    ds, ts = make(dls, dopt), make(tls, topt)
    for _ in range(13):
        ds.step()
        ts.step()
    dg.save({"opt": dopt.state_dict(), "sched": ds.state_dict()}, tmp_path / "ckpt.dg")
    saved = dg.load(tmp_path / "ckpt.dg")
    opt_state, sched_state = saved["opt"], saved["sched"]
    dopt2, _ = _optimizers("SGD")
    ds2 = make(dls, dopt2)  # torch's order: build both, then load both
    dopt2.load_state_dict(opt_state)
    ds2.load_state_dict(sched_state)
    for _ in range(STEPS - 13):
        ds2.step()
        ts.step()
        np.testing.assert_allclose(ds2.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        _assert_same_groups(dopt2, topt)


@pytest.mark.parametrize(
    "name,make",
    [s for s in SCHEDULERS if s[0] in ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR")],
    ids=lambda s: s if isinstance(s, str) else "",
)
def test_step_with_an_epoch_uses_torchs_closed_form(name, make):
    dopt, topt = _optimizers("SGD")
    ds, ts = make(dls, dopt), make(tls, topt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates step(epoch)
        for epoch in [3, 17, 4, 30, 9]:
            ds.step(epoch)
            ts.step(epoch)
            np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("last_epoch", [4, 11])
@pytest.mark.parametrize("name", ["ExponentialLR", "CosineAnnealingLR", "LinearLR", "StepLR"])
def test_constructing_with_last_epoch_matches_torch(name, last_epoch):
    dopt, topt = _optimizers("SGD")
    for o in (dopt, topt):
        for g in o.param_groups:
            g["initial_lr"] = g["lr"]
    ds = getattr(dls, name)(dopt, **_KWARGS[name], last_epoch=last_epoch)
    ts = getattr(tls, name)(topt, **_KWARGS[name], last_epoch=last_epoch)
    for _ in range(15):
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        ds.step()
        ts.step()


_KWARGS = {
    "ExponentialLR": dict(gamma=0.9),
    "CosineAnnealingLR": dict(T_max=6, eta_min=0.01),
    "LinearLR": dict(start_factor=0.5, total_iters=7),
    "StepLR": dict(step_size=3, gamma=0.5),
}


def test_two_chained_schedulers_compose_like_torch():
    dopt, topt = _optimizers("SGD")
    dss = [dls.ExponentialLR(dopt, gamma=0.9), dls.MultiStepLR(dopt, milestones=[3, 8], gamma=0.1)]
    tss = [tls.ExponentialLR(topt, gamma=0.9), tls.MultiStepLR(topt, milestones=[3, 8], gamma=0.1)]
    for _ in range(30):
        for s in dss + tss:
            s.step()
        _assert_same_groups(dopt, topt)


REDUCE_CASES = [
    dict(patience=2, cooldown=1, factor=0.5, min_lr=0.01),
    dict(mode="max", patience=1, threshold=0.05, factor=0.3),
    dict(mode="min", threshold_mode="abs", threshold=0.05, patience=0, min_lr=[0.05, 0.001]),
    dict(mode="max", threshold_mode="abs", threshold=0.0, patience=3, cooldown=2, eps=0.02),
]


@pytest.mark.parametrize("kwargs", REDUCE_CASES, ids=range(len(REDUCE_CASES)))
def test_reduce_on_plateau_matches_torch(kwargs):
    dopt, topt = _optimizers("SGD")
    ds, ts = dls.ReduceLROnPlateau(dopt, **kwargs), tls.ReduceLROnPlateau(topt, **kwargs)
    rng = np.random.default_rng(0)
    metrics = np.concatenate([np.linspace(1, 0.5, 8), 0.5 + 0.02 * rng.standard_normal(40)])
    for i, m in enumerate(metrics):
        ds.step(m)
        ts.step(m)
        _assert_same_groups(dopt, topt)
        assert ds.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12)
        assert (ds.best, ds.num_bad_epochs, ds.cooldown_counter) == (ts.best, ts.num_bad_epochs, ts.cooldown_counter)
        if i == 20:  # resume halfway from a state dict
            state = ds.state_dict()
            ds = dls.ReduceLROnPlateau(dopt, **kwargs)
            ds.load_state_dict(state)


def test_bad_scheduler_arguments_raise_config_errors():
    opt = optim.SGD([dg.zeros(1, requires_grad=True)], lr=0.1)
    adagrad = optim.Adagrad([dg.zeros(1, requires_grad=True)], lr=0.1)
    cases = [
        (lambda: dls.StepLR(opt, step_size=0), "step_size must be a positive number"),
        (lambda: dls.LinearLR(opt, start_factor=0), "start_factor must be in \\(0, 1\\]"),
        (lambda: dls.LinearLR(opt, end_factor=1.5), "end_factor must be in \\[0, 1\\]"),
        (lambda: dls.CosineAnnealingLR(opt, T_max=0), "T_max must be > 0"),
        (lambda: dls.LambdaLR(opt, [lambda e: 1, lambda e: 1]), "one value per param group: got 2 for 1"),
        (lambda: dls.OneCycleLR(opt, max_lr=1.0), "give total_steps, or epochs and steps_per_epoch"),
        (lambda: dls.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="exp"), "anneal_strategy"),
        (lambda: dls.OneCycleLR(adagrad, max_lr=1.0, total_steps=10), "Adagrad has no momentum or betas"),
        (lambda: dls.SequentialLR(opt, [dls.StepLR(opt, 2)], milestones=[3]), "expected 0 milestones"),
        (lambda: dls.ReduceLROnPlateau(opt, factor=1.0), "factor must be < 1.0"),
        (lambda: dls.ReduceLROnPlateau(opt, mode="avg"), "mode must be 'min' or 'max'"),
        (lambda: dls.ExponentialLR(optim.SGD([dg.zeros(1, requires_grad=True)]), 0.9, last_epoch=3), "initial_lr"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError, match=message):
            make()
    one_cycle = dls.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(2):
        one_cycle.step()
    with pytest.raises(ConfigError, match="tried to step 4 times; total_steps is 3"):
        one_cycle.step()
        one_cycle.step()


@pytest.mark.parametrize(
    ("make", "torch_error"),
    [
        (lambda m, o: m.StepLR(o, 2), TypeError),
        (lambda m, o: m.LambdaLR(o, lambda e: 1.0), AttributeError),  # torch reads param_groups first
        (lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=10), TypeError),
        (lambda m, o: m.CyclicLR(o, base_lr=0.1, max_lr=1.0), TypeError),
        (lambda m, o: m.ReduceLROnPlateau(o), TypeError),
    ],
)
def test_a_scheduler_on_something_not_an_optimizer_is_a_type_error_naming_it(make, torch_error):
    with pytest.raises(torch_error):
        make(tls, object())
    with pytest.raises(DTypeError, match="object is not an Optimizer") as err:
        make(dls, object())
    assert type(make(dls, optim.SGD([dg.zeros(1, requires_grad=True)], lr=0.1))).__name__ in str(err.value)
