"""ConstantLR, MultiplicativeLR, PolynomialLR, CosineAnnealingWarmRestarts, CyclicLR and ChainedScheduler
against torch: lr (and cycled momentum) sequences with two param groups, get_last_lr, resuming from a
state dict, step(epoch) (SGDR's fractional epochs), chaining, and training with the new optimizers."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import optim
from distgraph.errors import ConfigError
from distgraph.optim import lr_scheduler as dls
from tests.optim.test_lr_scheduler import _assert_same_groups, _optimizers
from tests.optim.test_optimizers import _data, _max_diff, _step_both

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's scheduler-order hints
tls = torch.optim.lr_scheduler
STEPS = 40


class Halving:
    """A callable object: its attributes are scheduler state (torch's rule for lr_lambda and scale_fn)."""

    def __init__(self, base=0.5):
        self.base = base

    def __call__(self, x):
        return self.base ** (x - 1) if x >= 1 else 1.0


SCHEDULERS = [
    ("ConstantLR", lambda m, o: m.ConstantLR(o, factor=0.4, total_iters=6)),
    ("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.95)),
    ("MultiplicativeLR-per-group", lambda m, o: m.MultiplicativeLR(o, [lambda e: 0.9, lambda e: 1.0 + 0.01 * e])),
    ("PolynomialLR", lambda m, o: m.PolynomialLR(o, total_iters=25, power=2.0)),
    ("PolynomialLR-linear", lambda m, o: m.PolynomialLR(o, total_iters=10)),
    ("CosineAnnealingWarmRestarts", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=0.001)),
    ("CosineAnnealingWarmRestarts-Tmult", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)),
    ("CyclicLR-triangular", lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5)),
    (
        "CyclicLR-triangular2",
        lambda m, o: m.CyclicLR(
            o,
            base_lr=[0.01, 0.002],
            max_lr=[0.1, 0.05],
            step_size_up=4,
            step_size_down=6,
            mode="triangular2",
            base_momentum=[0.8, 0.7],
            max_momentum=0.95,
        ),
    ),  # fmt: skip
    ("CyclicLR-exp_range", lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.97)),
    (
        "CyclicLR-scale_fn",
        lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=4, scale_fn=Halving(), scale_mode="cycle"),
    ),
    (
        "CyclicLR-no-momentum",
        lambda m, o: m.CyclicLR(
            o, 0.01, 0.1, step_size_up=4, scale_fn=lambda x: 0.99**x, scale_mode="iterations", cycle_momentum=False
        ),
    ),  # fmt: skip
    (
        "ChainedScheduler",
        lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.5, total_iters=4), m.ExponentialLR(o, gamma=0.9)]),
    ),
    (
        "ChainedScheduler-nested",
        lambda m, o: m.ChainedScheduler(
            [
                m.PolynomialLR(o, total_iters=30),
                m.MultiplicativeLR(o, lambda e: 0.99),
                m.SequentialLR(o, [m.LinearLR(o, 0.2, total_iters=4), m.CosineAnnealingWarmRestarts(o, T_0=5)], [4]),
            ],
            optimizer=o,
        ),
    ),  # fmt: skip
    (
        "SequentialLR-of-new",
        lambda m, o: m.SequentialLR(o, [m.ConstantLR(o, factor=0.1, total_iters=3), m.PolynomialLR(o, 20)], [3]),
    ),
]


@pytest.mark.parametrize("name,make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
@pytest.mark.parametrize("opt", ["SGD", "Adam", "NAdam"])
def test_scheduler_matches_torch_for_40_steps(name, make, opt):
    dopt, topt = _optimizers(opt)
    ds, ts = make(dls, dopt), make(tls, topt)
    for _ in range(STEPS):
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        _assert_same_groups(dopt, topt)
        for s in (dopt, topt, ds, ts):
            s.step()
    if hasattr(ts, "last_epoch"):
        assert ds.last_epoch == ts.last_epoch


@pytest.mark.parametrize("name,make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_resuming_from_a_checkpoint_continues_the_sequence(name, make, tmp_path):
    """Optimizer and scheduler state saved to a file after 13 steps, loaded into fresh ones: the same lrs
    (and momenta) as torch's uninterrupted run."""
    dopt, topt = _optimizers("SGD")
    ds, ts = make(dls, dopt), make(tls, topt)
    for _ in range(13):
        ds.step()
        ts.step()
    dg.save({"opt": dopt.state_dict(), "sched": ds.state_dict()}, tmp_path / "ckpt.dg")
    saved = dg.load(tmp_path / "ckpt.dg")
    dopt2, _ = _optimizers("SGD")
    ds2 = make(dls, dopt2)
    dopt2.load_state_dict(saved["opt"])
    ds2.load_state_dict(saved["sched"])
    for _ in range(STEPS - 13):
        ds2.step()
        ts.step()
        np.testing.assert_allclose(ds2.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        _assert_same_groups(dopt2, topt)


def test_callable_objects_state_is_saved_and_restored():
    """A callable object's attributes travel in the state dict (CyclicLR's scale_fn, MultiplicativeLR's lambda)."""
    for make in (
        lambda o, f: dls.CyclicLR(o, 0.01, 0.1, step_size_up=2, scale_fn=f, cycle_momentum=False),
        lambda o, f: dls.MultiplicativeLR(o, f),
    ):
        dopt, _ = _optimizers("SGD")
        sd = make(dopt, Halving(0.3)).state_dict()
        fn = Halving(0.9)
        make(_optimizers("SGD")[0], fn).load_state_dict(sd)
        assert fn.base == 0.3


@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_warm_restarts_with_fractional_epochs_match_torch(T_mult):
    """SGDR's documented use: step(epoch + i / iters) within each epoch, and jumps back and forth."""
    dopt, topt = _optimizers("SGD")
    ds = dls.CosineAnnealingWarmRestarts(dopt, T_0=2, T_mult=T_mult, eta_min=0.01)
    ts = tls.CosineAnnealingWarmRestarts(topt, T_0=2, T_mult=T_mult, eta_min=0.01)
    epochs = [e + i / 5 for e in range(12) for i in range(5)] + [3.5, 0.25, 17.0, 1.0, 40.75]
    for epoch in epochs:
        ds.step(epoch)
        ts.step(epoch)
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)
        assert (ds.last_epoch, ds.T_i) == (ts.last_epoch, ts.T_i)
        assert ds.T_cur == pytest.approx(ts.T_cur, rel=1e-12, abs=1e-12)
    for _ in range(10):  # and plain steps after the jumps
        ds.step()
        ts.step()
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["ConstantLR", "PolynomialLR"])
def test_step_with_an_epoch_uses_torchs_closed_form(name):
    dopt, topt = _optimizers("SGD")
    kwargs = dict(factor=0.3, total_iters=8) if name == "ConstantLR" else dict(total_iters=20, power=1.5)
    ds, ts = getattr(dls, name)(dopt, **kwargs), getattr(tls, name)(topt, **kwargs)
    for epoch in [3, 17, 4, 30, 9, 8]:
        ds.step(epoch)
        ts.step(epoch)
        np.testing.assert_allclose(ds.get_last_lr(), ts.get_last_lr(), rtol=1e-12, atol=1e-15)


TRAINING = [
    ("NAdam", dict(lr=0.02), lambda m, o: m.CyclicLR(o, 0.005, 0.05, step_size_up=3, mode="triangular2")),
    ("RAdam", dict(lr=0.02), lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2)),
    ("Adamax", dict(lr=0.02), lambda m, o: m.ChainedScheduler([m.ConstantLR(o, 0.5, 3), m.PolynomialLR(o, 20)])),
    ("ASGD", dict(lr=0.05, t0=5), lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9)),
    ("Adadelta", dict(lr=1.0), lambda m, o: m.CyclicLR(o, 0.1, 1.0, step_size_up=2, cycle_momentum=False)),
]


@pytest.mark.parametrize("opt,kwargs,make", TRAINING, ids=[t[0] for t in TRAINING])
def test_new_optimizers_under_new_schedulers_train_like_torch(opt, kwargs, make):
    """The schedule reaches the update: lr (and NAdam's cycled beta1) per param group, step after step."""
    init, grads = _data(np.random.default_rng(3), 20)
    dps = [dg.tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": kwargs["lr"] / 2}]

    dopt, topt = getattr(optim, opt)(groups(dps), **kwargs), getattr(torch.optim, opt)(groups(tps), **kwargs)
    ds, ts = make(dls, dopt), make(tls, topt)
    for g in grads:
        _step_both(dopt, topt, dps, tps, [g])
        ds.step()
        ts.step()
        _assert_same_groups(dopt, topt)
    assert _max_diff(dps, tps) <= 1e-12


def test_bad_arguments_raise_config_errors():
    opt = optim.SGD([dg.zeros(1, requires_grad=True)], lr=0.1)
    other = optim.SGD([dg.zeros(1, requires_grad=True)], lr=0.1)
    adagrad = optim.Adagrad([dg.zeros(1, requires_grad=True)], lr=0.1)
    cases = [
        (lambda: dls.ConstantLR(opt, factor=1.5), "ConstantLR: factor must be in \\[0, 1\\]"),
        (lambda: dls.PolynomialLR(opt, total_iters=0), "PolynomialLR: total_iters must be > 0"),
        (lambda: dls.MultiplicativeLR(opt, 0.9), "MultiplicativeLR: lr_lambda must be callable, got float"),
        (lambda: dls.MultiplicativeLR(opt, [abs, abs]), "MultiplicativeLR: lr_lambda must have one value per"),
        (lambda: dls.CosineAnnealingWarmRestarts(opt, T_0=0), "T_0 must be a positive integer"),
        (lambda: dls.CosineAnnealingWarmRestarts(opt, T_0=2.5), "T_0 must be a positive integer"),
        (lambda: dls.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=0), "T_mult must be an integer >= 1"),
        (lambda: dls.CosineAnnealingWarmRestarts(opt, T_0=2).step(-1), "expected a non-negative epoch"),
        (lambda: dls.CyclicLR(opt, 0.01, 0.1, mode="sine"), "CyclicLR: mode must be one of"),
        (lambda: dls.CyclicLR(opt, 0.01, 0.1, step_size_up=0), "CyclicLR: step sizes must be positive"),
        (lambda: dls.CyclicLR(opt, [0.01, 0.02], 0.1), "CyclicLR: base_lr must have one value per param group"),
        (lambda: dls.CyclicLR(adagrad, 0.01, 0.1), "Adagrad has no momentum or betas to cycle"),
        (lambda: dls.ChainedScheduler([]), "expects at least one scheduler"),
        (lambda: dls.ChainedScheduler([dls.StepLR(opt, 2), dls.StepLR(other, 2)]), "scheduler 1 \\(StepLR\\) belongs"),
        (lambda: dls.ChainedScheduler([dls.ReduceLROnPlateau(opt)]), "does not support ReduceLROnPlateau"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError, match=message):
            make()
