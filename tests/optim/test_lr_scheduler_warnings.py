"""torch's lr-scheduler warnings, word for word: `scheduler.step()` before `optimizer.step()` (including a
step GradScaler skipped), the deprecated `epoch` argument, and `get_lr()` called outside `step()`; and
StepLR's float step_size, which torch takes."""

import warnings

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


def _warnings_of(lib, run):
    """The messages of the UserWarnings `run(lib, optimizer, parameter)` raised."""
    p = lib.nn.Parameter(lib.zeros(2))
    opt = lib.optim.SGD([p], lr=0.1, momentum=0.9)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run(lib, opt, p)
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def _optimizer_step(lib, opt, p):
    p.grad = lib.ones(2)
    opt.step()


def _scheduler_first(lib, opt, p):
    s = lib.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    s.step()
    _optimizer_step(lib, opt, p)
    s.step()


def _right_order(lib, opt, p):
    s = lib.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    for _ in range(3):
        _optimizer_step(lib, opt, p)
        s.step()
    s.get_last_lr()


def _epoch_argument(lib, opt, p):
    s = lib.optim.lr_scheduler.MultiStepLR(opt, [2, 4])
    _optimizer_step(lib, opt, p)
    s.step(3)
    lib.optim.lr_scheduler.ReduceLROnPlateau(opt).step(1.0, 5)
    lib.optim.lr_scheduler.ReduceLROnPlateau(opt).step(1.0)


def _sgdr_epoch(lib, opt, p):  # CosineAnnealingWarmRestarts' step(epoch) is its documented use: no warning
    s = lib.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3)
    _optimizer_step(lib, opt, p)
    s.step(0.5)
    s.step()


def _composed(lib, opt, p):
    sch = lib.optim.lr_scheduler
    seq = sch.SequentialLR(opt, [sch.LinearLR(opt, 0.5, total_iters=2), sch.ExponentialLR(opt, 0.9)], milestones=[2])
    for _ in range(4):
        _optimizer_step(lib, opt, p)
        seq.step()


def _chained_first(lib, opt, p):
    sch = lib.optim.lr_scheduler
    chain = sch.ChainedScheduler([sch.ConstantLR(opt, 0.5, total_iters=2), sch.ExponentialLR(opt, 0.9)])
    chain.step()


def _skipped_by_grad_scaler(lib, opt, p):
    scaler = lib.amp.GradScaler("cpu") if lib is torch else lib.amp.GradScaler()
    s = lib.optim.lr_scheduler.StepLR(opt, 2)
    scaler.scale((p * lib.tensor([float("inf"), 1.0])).sum()).backward()
    scaler.step(opt)  # an inf gradient: no optimizer step, so torch's warning follows
    scaler.update()
    s.step()


SCENARIOS = [
    _scheduler_first,
    _right_order,
    _epoch_argument,
    _sgdr_epoch,
    _composed,
    _chained_first,
    _skipped_by_grad_scaler,
]


@pytest.mark.parametrize("run", SCENARIOS, ids=lambda f: f.__name__.strip("_"))
def test_scheduler_warnings_are_torchs(run):
    got = _warnings_of(dg, run)
    assert got == _warnings_of(torch, run)
    if run in (_scheduler_first, _epoch_argument, _skipped_by_grad_scaler):
        assert got  # (distgraph warned nothing)


GET_LR = {
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 0.9**e),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9),
    "StepLR": lambda m, o: m.StepLR(o, 2),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [1, 3]),
    "ConstantLR": lambda m, o: m.ConstantLR(o),
    "LinearLR": lambda m, o: m.LinearLR(o),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 5),
    "CyclicLR": lambda m, o: m.CyclicLR(o, 0.01, 0.1),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 3),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, 1.0, total_steps=10),
    "SWALR": lambda m, o: m.SWALR(o, swa_lr=0.01),
}


@pytest.mark.parametrize("name", GET_LR)
def test_get_lr_outside_step_points_to_get_last_lr(name):
    def run(lib, opt, p):
        module = lib.optim.swa_utils if name == "SWALR" else lib.optim.lr_scheduler
        s = GET_LR[name](module, opt)
        _optimizer_step(lib, opt, p)
        s.step()
        s.get_lr()

    got = _warnings_of(dg, run)
    assert got == _warnings_of(torch, run)
    assert got == ["To get the last learning rate computed by the scheduler, please use `get_last_lr()`."]


def _step_lr(lib, step_size, closed_form):
    opt = lib.optim.SGD([lib.nn.Parameter(lib.zeros(1))], lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = lib.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=0.5)
        lrs = []
        for epoch in range(1, 12):
            opt.step()
            s.step(epoch) if closed_form else s.step()
            lrs.append(s.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("step_size", [2.0, 2.5])
@pytest.mark.parametrize("closed_form", [False, True], ids=["chainable", "step-epoch"])
def test_step_lr_takes_a_float_step_size_as_torch(step_size, closed_form):
    np.testing.assert_allclose(_step_lr(dg, step_size, closed_form), _step_lr(torch, step_size, closed_form))
