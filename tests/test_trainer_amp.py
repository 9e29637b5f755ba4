"""Dynamic loss scaling in the Trainer: overflowing steps are skipped and counted, the scale backs off,
and Ray workers (each holding a slice of the parameters) make the same decisions as one process."""

import re

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.amp import GradScaler
from distgraph.errors import ConfigError


def data(n=256):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def train(backend, scaler, workers=2, epochs=3, **kw):
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with dg.Trainer(
        model, nn.functional.cross_entropy, opt, workers=workers, backend=backend, grad_scaler=scaler,
        progress=False, **kw,
    ) as t:  # fmt: skip
        hist = t.fit(data(), epochs=epochs, batch_size=32)
        return [p.detach().numpy().copy() for p in model.parameters()], hist, t


def overflowing_scaler():
    """2**140 × a float32 loss is inf: the first steps overflow until the scale has halved below 2**128."""
    return GradScaler(init_scale=2.0**140, growth_interval=1000)


def test_overflowing_steps_are_skipped_counted_and_the_scale_backs_off():
    scaler = overflowing_scaler()
    _, hist, trainer = train("local", scaler)
    skipped = hist["skipped_steps"]
    assert skipped[0] == 8 and 12 <= sum(skipped) <= 14 and skipped[-1] == 0  # one halving per skip: 2**140 → 2**127
    assert sum(skipped) == scaler.skipped_steps
    assert scaler.steps == trainer.global_step == 3 * 8
    assert hist["loss_scale"][-1] <= 2.0**128  # × the shard weight 1/2: finite in float32
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < hist["loss"][0]


def test_skipped_steps_leave_parameters_and_optimizer_state_untouched():
    dg.manual_seed(0)
    model = nn.Linear(8, 3)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    t = dg.Trainer(model, nn.functional.cross_entropy, opt, grad_scaler=GradScaler(init_scale=2.0**200), progress=False)
    hist = t.fit(data(64), epochs=1, batch_size=32)  # two steps, both overflow (2**200, 2**199)
    assert hist["skipped_steps"] == [2]
    assert all(np.array_equal(a, p.detach().numpy()) for a, p in zip(before, model.parameters()))
    assert opt.state_dict()["state"] == {}


def test_a_clean_scaled_run_equals_an_unscaled_one():
    """Scaling by a power of two and unscaling is exact: with no overflow the parameters are the same bits."""
    plain, _, _ = train("local", None)
    scaled, hist, _ = train("local", GradScaler(init_scale=2.0**10))
    assert hist["skipped_steps"] == [0, 0, 0]
    assert all(np.array_equal(a, b) for a, b in zip(plain, scaled))


@pytest.mark.ray
@pytest.mark.parametrize("allreduce", ["auto", "gloo"])  # ranks meet in a segment / in a gloo group
def test_ray_workers_skip_the_same_steps_and_give_the_local_bits(ray_session, allreduce):
    if allreduce == "gloo":
        pytest.importorskip("torch")
    local_scaler, ray_scaler = overflowing_scaler(), overflowing_scaler()
    local, hl, _ = train("local", local_scaler)
    remote, hr, _ = train("ray", ray_scaler, allreduce=allreduce)
    assert hl["skipped_steps"] == hr["skipped_steps"]
    assert local_scaler.state_dict() == ray_scaler.state_dict()
    assert all(np.array_equal(a, b) for a, b in zip(local, remote))


@pytest.mark.ray
def test_loss_scaling_where_the_store_applies_updates_is_refused(ray_session):
    with pytest.raises(ConfigError, match="grad_scaler"):
        train("ray", GradScaler(), sync="async", epochs=1)


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("growth_factor", 1.0, "growth_factor must be a number > 1.0 (as in torch), got 1.0"),
        ("growth_factor", 0.5, "growth_factor must be a number > 1.0"),
        ("backoff_factor", 1.0, "backoff_factor must be a number in (0, 1)"),
        ("backoff_factor", 1.5, "backoff_factor must be a number in (0, 1)"),
    ],
)
def test_grad_scaler_refuses_what_torch_refuses(option, value, message):
    """torch's GradScaler asserts growth_factor > 1 and backoff_factor < 1; distgraph's took anything."""
    torch = pytest.importorskip("torch")
    with pytest.raises(AssertionError):
        torch.amp.GradScaler("cpu", **{option: value})
    with pytest.raises(ConfigError, match=f"^GradScaler: {re.escape(message)}"):
        GradScaler(**{option: value})


@pytest.mark.parametrize(
    "option,value",
    [("init_scale", 0.0), ("init_scale", float("nan")), ("init_scale", "big"), ("backoff_factor", 0.0),
     ("growth_interval", 0), ("growth_interval", -1), ("growth_interval", 1.5)],
)  # fmt: skip
def test_grad_scaler_arguments_it_cannot_use_are_refused_at_construction(option, value):
    """init_scale=0 and growth_interval=0 were taken and then failed at the first step with a bare
    ZeroDivisionError (1/scale, steps % interval); backoff_factor=0 zeroed the scale at the first overflow."""
    with pytest.raises(ConfigError, match=f"^GradScaler: {option} must be"):
        GradScaler(**{option: value})


def test_a_disabled_grad_scaler_checks_nothing_as_torch():
    assert not GradScaler(growth_factor=1.0, enabled=False).enabled
