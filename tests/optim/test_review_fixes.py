"""Divergences from torch found in a review of the optimizers, GradScaler and gradient clipping, each checked
against torch (float64): the clipping recipe with a GradScaler, a disabled scaler, the scaler's growth tracker
and state_dict, NaN hyperparameters, and clip_grad_norm_ with norm_type=0."""

import math

import numpy as np
import pytest

import distgraph as dg
from distgraph.amp import GradScaler, GradScalerError
from distgraph.errors import ConfigError, DistgraphError

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
W0 = RNG.standard_normal(4)
GRADS = [RNG.standard_normal(4) for _ in range(7)]
GRADS[2][1] = np.inf  # an overflowing step in the middle


def _scaler(lib, **kw):
    return GradScaler(**kw) if lib is dg else torch.amp.GradScaler("cpu", **kw)


def _scaled_run(lib, clip, **scaler_kw):
    """SGD on loss = sum(p * g) through a GradScaler; with `clip`, torch's documented clipping recipe
    (unscale_, clip_grad_norm_, step, update). Returns the parameters and the scale after each step."""
    p = lib.tensor(W0.copy(), requires_grad=True)
    opt = lib.optim.SGD([p], lr=0.1, momentum=0.9)
    scaler = _scaler(lib, **scaler_kw)
    out = []
    for g in GRADS:
        opt.zero_grad()
        scaler.scale((p * lib.tensor(g)).sum()).backward()
        if clip:
            scaler.unscale_(opt)
            lib.nn.utils.clip_grad_norm_([p], 1.5)
        scaler.step(opt)
        scaler.update()
        out.append((p.detach().numpy().copy(), scaler.get_scale()))
    return out, scaler


@pytest.mark.parametrize("clip", [False, True])
def test_unscale_then_step_divides_the_gradients_once_as_torch(clip):
    """step() after unscale_() unscaled the gradients a second time (divided by the scale twice): with
    init_scale=8 distgraph's parameters left torch's by 0.11 at the first step."""
    ours, _ = _scaled_run(dg, clip, init_scale=8.0, growth_interval=2)
    theirs, _ = _scaled_run(torch, clip, init_scale=8.0, growth_interval=2)
    for (p, s), (q, t) in zip(ours, theirs):
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)
        assert s == t


def test_unscale_twice_or_step_twice_before_update_is_refused_as_torch():
    for lib, err in ((torch, RuntimeError), (dg, GradScalerError)):
        p = lib.tensor(W0.copy(), requires_grad=True)
        opt = lib.optim.SGD([p], lr=0.1)
        scaler = _scaler(lib, init_scale=4.0)
        scaler.scale(lib.tensor(1.0))  # torch's scaler makes its scale here
        p.grad = lib.tensor(GRADS[0].copy())
        scaler.unscale_(opt)
        with pytest.raises(err, match="already been called"):
            scaler.unscale_(opt)
        scaler.step(opt)
        with pytest.raises(err, match="already been called"):
            scaler.step(opt)
        with pytest.raises(err, match="after step"):
            scaler.unscale_(opt)
        scaler.update()
        scaler.step(opt)  # a new iteration
    assert issubclass(GradScalerError, DistgraphError) and issubclass(GradScalerError, RuntimeError)


def test_update_without_a_step_is_refused_and_new_scale_sets_the_scale():
    scaler = GradScaler(init_scale=4.0)
    with pytest.raises(GradScalerError, match="no inf checks"):
        scaler.update()  # counted a clean step before
    scaler.update(new_scale=32.0)
    assert scaler.get_scale() == torch.amp.GradScaler("cpu", init_scale=4.0).get_scale() * 8


def test_a_disabled_scaler_leaves_the_gradients_alone_and_reports_scale_1():
    """A disabled scaler's unscale_ divided the gradients by init_scale (65536) and get_scale() returned it;
    torch's unscale_ does nothing and get_scale() is 1.0 (scale() multiplies by nothing)."""
    for lib in (torch, dg):
        p = lib.tensor(W0.copy(), requires_grad=True)
        opt = lib.optim.SGD([p], lr=0.1)
        scaler = _scaler(lib, enabled=False)
        p.grad = lib.tensor(GRADS[0].copy())
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        np.testing.assert_allclose(p.detach().numpy(), W0 - 0.1 * GRADS[0], rtol=1e-14)
        assert scaler.get_scale() == 1.0


def test_growth_tracker_and_state_dict_follow_torch_and_load_torchs_state_dict():
    """The state_dict had none of torch's keys (loading torch's raised KeyError) and the tracker was not reset
    when the scale grew."""
    _, ours = _scaled_run(dg, False, init_scale=8.0, growth_interval=3)
    _, theirs = _scaled_run(torch, False, init_scale=8.0, growth_interval=3)
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert {k: sd[k] for k in tsd} == tsd
    assert (sd["steps"], sd["skipped_steps"]) == (7, 1)
    loaded = GradScaler()
    loaded.load_state_dict(tsd)
    assert {k: loaded.state_dict()[k] for k in tsd} == tsd
    with pytest.raises(GradScalerError, match="empty"):
        loaded.load_state_dict(torch.amp.GradScaler("cpu", enabled=False).state_dict())


def test_the_scale_does_not_grow_to_inf():
    """torch keeps the scale when growing it would overflow; distgraph's became inf, and 1/inf = 0 then zeroed
    every gradient with no overflow reported."""
    top = 2.0**1023
    scaler = GradScaler(init_scale=top, growth_interval=1)
    p = dg.tensor(np.array([1.0]), requires_grad=True)
    opt = dg.optim.SGD([p], lr=0.1)
    p.grad = dg.tensor(np.array([top]))
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == top and scaler.state_dict()["_growth_tracker"] == 0
    t_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1)  # float32's largest power of 2
    q = torch.tensor([1.0], requires_grad=True)
    q.grad = t_scaler.scale(torch.tensor([1.0]))
    t_scaler.step(torch.optim.SGD([q], lr=0.1))
    t_scaler.update()
    assert t_scaler.get_scale() == 2.0**127


def test_scale_takes_a_list_or_tuple_of_outputs_as_torch():
    scaled = GradScaler(init_scale=4.0).scale((dg.tensor(1.0), [dg.tensor(2.0)]))
    assert isinstance(scaled, tuple) and float(scaled[0].item()) == 4.0 and float(scaled[1][0].item()) == 8.0


_NAN_CASES = [
    ("Adam", "lr"), ("Adam", "eps"), ("Adam", "weight_decay"), ("AdamW", "eps"), ("NAdam", "momentum_decay"),
    ("RAdam", "weight_decay"), ("Adamax", "eps"), ("Adagrad", "lr_decay"), ("Adagrad", "initial_accumulator_value"),
    ("Adagrad", "eps"), ("Adadelta", "eps"), ("Adadelta", "lr"), ("RMSprop", "alpha"), ("RMSprop", "momentum"),
    ("RMSprop", "eps"), ("Rprop", "lr"), ("ASGD", "weight_decay"), ("LBFGS", "lr"),
]  # fmt: skip


@pytest.mark.parametrize("name,option", _NAN_CASES)
def test_nan_hyperparameters_are_refused_as_torch(name, option):
    """`value < 0` let NaN through, and the first step made every parameter NaN; torch's `not 0.0 <= value`
    refuses it with a ValueError."""
    with pytest.raises(ValueError):
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **{option: math.nan})
    what = "learning rate lr=nan" if option == "lr" else f"{option} value nan"
    with pytest.raises(ConfigError, match=f"^{name}: invalid {what}"):
        getattr(dg.optim, name)([dg.zeros(2, requires_grad=True)], **{option: math.nan})


def test_nan_in_an_added_param_group_is_refused():
    opt = dg.optim.SGD([dg.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ConfigError, match="SGD: invalid momentum value nan"):
        opt.add_param_group({"params": [dg.zeros(2, requires_grad=True)], "momentum": math.nan})


@pytest.mark.parametrize("norm_type", [0, 0.5, 3.0, -math.inf])
def test_clip_grad_norm_of_order_0_and_others_matches_torch(norm_type):
    """norm_type=0 raised ZeroDivisionError (1/p); torch's norm of order 0 counts nonzeros (of each gradient,
    then of those norms), and every order is now the norm of the per-gradient norms, as torch's."""
    grads = [RNG.standard_normal((3, 4)), np.array([0.5, 0.0]), RNG.standard_normal(())]
    results = []
    for lib in (torch, dg):
        ps = [lib.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = lib.tensor(g.copy())
        total = lib.nn.utils.clip_grad_norm_(ps, 0.7, norm_type=norm_type)
        results.append((float(total), [p.grad.numpy() for p in ps]))
    (t_total, t_grads), (d_total, d_grads) = results
    assert d_total == pytest.approx(t_total, rel=1e-14)
    for a, b in zip(t_grads, d_grads):
        np.testing.assert_allclose(b, a, rtol=1e-13)


def test_unscale_multiplies_by_the_float32_inverse_scale_as_torch():
    """torch unscales with the float64 reciprocal of the scale rounded to float32; distgraph used the float64
    reciprocal, so float64 gradients left torch's by about 1e-8 relative whenever 1/scale is not a float32."""
    grads = []
    for lib in (dg, torch):
        p = lib.tensor(W0.copy(), requires_grad=True)
        opt = lib.optim.SGD([p], lr=0.1)
        scaler = _scaler(lib, init_scale=3.0)
        scaler.scale((p * lib.tensor(GRADS[0])).sum()).backward()
        scaler.unscale_(opt)
        grads.append(np.asarray(p.grad.detach().numpy()))
    np.testing.assert_array_equal(grads[0], grads[1])
    assert not np.array_equal(grads[0], GRADS[0] * 3.0 * (1.0 / 3.0))  # the float64 reciprocal gives other values


def test_float16_gradients_are_refused_before_any_is_divided_as_torch():
    for lib, err in ((torch, ValueError), (dg, ConfigError)):
        p32 = lib.tensor(W0.copy(), requires_grad=True)
        p16 = lib.tensor(W0.astype(np.float16), requires_grad=True)
        opt = lib.optim.SGD([p32, p16], lr=0.1)
        scaler = _scaler(lib, init_scale=4.0)
        scaler.scale(lib.tensor(1.0))
        p32.grad, p16.grad = lib.tensor(GRADS[0].copy()), lib.tensor(GRADS[0].astype(np.float16))
        with pytest.raises(err, match="(?i)unscale (FP16|float16) gradients"):
            scaler.unscale_(opt)
        np.testing.assert_array_equal(p32.grad.detach().numpy(), GRADS[0])  # left as it was
