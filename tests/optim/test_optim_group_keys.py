"""Param-group keys as torch keeps them: a user's own keys ("name", "lr_mult") in the constructor, in
add_param_group and through a state dict; SWALR's "swa_lr" surviving a resume; `named_parameters()` as
input and its "param_names"; a parameter listed twice in a group (torch's warning, not an error)."""

import copy

import numpy as np
import pytest

import distgraph as dg
from distgraph.errors import ConfigError

torch = pytest.importorskip("torch")
LIBS = [dg, torch]


def _params(lib, n=2):
    return [lib.nn.Parameter(lib.tensor(np.arange(1.0, 3.0) * (i + 1), dtype=lib.float64)) for i in range(n)]


def _groups_without_params(opt):
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def _same_groups(got, want):
    """Group dicts equal key for key (torch's lists and distgraph's tuples of betas alike)."""
    norm = [{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in g.items()} for g in got]
    assert norm == [{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in g.items()} for g in want]


def _user_keys(lib):
    a, b, c = _params(lib, 3)
    opt = lib.optim.AdamW([{"params": [a], "name": "backbone", "lr_mult": 0.1}, {"params": [b]}], lr=1e-3)
    opt.add_param_group({"params": [c], "name": "head"})
    opt.param_groups[1]["name"] = "neck"  # a key set on a group after the constructor
    saved = copy.deepcopy(opt.state_dict())
    fresh = lib.optim.AdamW([{"params": [p]} for p in _params(lib, 3)], lr=1e-3)
    fresh.load_state_dict(saved)
    return opt, saved, fresh


def test_user_keys_are_kept_by_the_constructor_add_param_group_and_a_state_dict_as_torch():
    opt, saved, fresh = _user_keys(dg)
    topt, tsaved, tfresh = _user_keys(torch)
    _same_groups(_groups_without_params(opt), _groups_without_params(topt))
    _same_groups(saved["param_groups"], tsaved["param_groups"])
    _same_groups(_groups_without_params(fresh), _groups_without_params(tfresh))
    assert [g.get("name") for g in fresh.param_groups] == ["backbone", "neck", "head"]
    assert fresh.param_groups[0]["lr_mult"] == 0.1


@pytest.mark.parametrize("lib", LIBS, ids=["distgraph", "torch"])
def test_a_misspelled_option_is_kept_as_a_key_not_refused(lib):
    opt = lib.optim.SGD([{"params": _params(lib, 1), "momentun": 0.9}], lr=0.1)
    assert opt.param_groups[0]["momentun"] == 0.9 and opt.param_groups[0]["momentum"] == 0


def test_a_loaded_group_still_has_its_values_checked():
    opt = dg.optim.SGD(_params(dg, 1), lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ConfigError, match="SGD: invalid learning rate lr=-1.0"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.1


def _swalr_resume(lib):
    """torch's documented resume order: optimizer and scheduler made, then both loaded; then three steps."""
    opt = lib.optim.SGD(_params(lib, 1), lr=0.1)
    sched = lib.optim.swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=3)
    checkpoint = {"opt": copy.deepcopy(opt.state_dict()), "sched": copy.deepcopy(sched.state_dict())}
    ps = _params(lib, 1)
    opt2 = lib.optim.SGD(ps, lr=0.1)
    sched2 = lib.optim.swa_utils.SWALR(opt2, swa_lr=0.05, anneal_epochs=3)
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    lrs = []
    for _ in range(3):
        ps[0].grad = lib.zeros_like(ps[0])
        opt2.step()
        sched2.step()
        lrs.append(sched2.get_last_lr()[0])
    return opt2.param_groups[0]["swa_lr"], lrs


def test_swalr_steps_on_after_the_optimizer_is_restored_from_a_checkpoint():
    swa_lr, lrs = _swalr_resume(dg)  # (KeyError 'swa_lr': load_state_dict dropped it)
    want_swa_lr, want = _swalr_resume(torch)
    assert swa_lr == want_swa_lr == 0.01
    np.testing.assert_allclose(lrs, want, rtol=1e-12)


def _named(lib, grouped):
    w, b = _params(lib)
    pairs = [("layer.weight", w), ("layer.bias", b)]
    opt = lib.optim.Adam([{"params": pairs[:1]}, {"params": pairs[1:], "lr": 0.01}] if grouped else pairs, lr=0.1)
    for _ in range(2):
        for p in (w, b):
            p.grad = p.detach() * 3
        opt.step()
    return opt, [p.detach().numpy().copy() for p in (w, b)]


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "two-groups"])
def test_named_parameters_are_optimized_and_their_names_saved_as_torch(grouped):
    opt, got = _named(dg, grouped)
    topt, want = _named(torch, grouped)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    names = [g["param_names"] for g in opt.state_dict()["param_groups"]]
    assert names == [g["param_names"] for g in topt.state_dict()["param_groups"]]
    fresh = dg.optim.Adam(opt.param_groups[0]["params"], lr=0.1) if not grouped else None
    if fresh is not None:  # a saved group's names replace none here: they are loaded too, as torch's
        fresh.load_state_dict(opt.state_dict())
        assert fresh.param_groups[0]["param_names"] == ["layer.weight", "layer.bias"]


def test_a_modules_named_parameters_generator_is_taken():
    model = dg.nn.Linear(2, 1)
    opt = dg.optim.AdamW(model.named_parameters(), lr=1e-3)
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["params"][0] is model.weight


def test_a_group_loaded_without_names_keeps_this_optimizers_names():
    w, b = _params(dg)
    opt = dg.optim.SGD([("w", w), ("b", b)], lr=0.1)
    sd = dg.optim.SGD([w, b], lr=0.2).state_dict()
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["param_names"] == ["w", "b"] and opt.param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("lib", LIBS, ids=["distgraph", "torch"])
def test_named_and_unnamed_parameters_do_not_mix(lib):
    w, b = _params(lib)
    with pytest.raises(ValueError, match="Some param names are missing"):
        lib.optim.SGD([("w", w), b], lr=0.1)
    opt = lib.optim.SGD([("w", w)], lr=0.1)
    with pytest.raises(ValueError, match="cannot add param group without names to the optimizer"):
        opt.add_param_group({"params": [b]})


def _twice(lib, momentum):
    (p,) = _params(lib, 1)
    with pytest.warns(UserWarning) as record:
        opt = lib.optim.SGD([p, p], lr=0.1, momentum=momentum, foreach=False)
    for _ in range(2):
        p.grad = p.detach() * 2
        opt.step()
    return [str(w.message) for w in record], opt.state_dict(), p.detach().numpy().copy()


def test_a_parameter_listed_twice_warns_and_steps_as_torch():
    messages, _, got = _twice(dg, 0.0)
    want_messages, _, want = _twice(torch, 0.0)
    assert messages == want_messages
    assert "in future, this will cause an error" in messages[0]
    np.testing.assert_allclose(got, want, rtol=1e-12)  # updated twice a step (with state, torch's result
    # depends on its kernel: each listing reads the buffer of the step before)
    _, sd, _ = _twice(dg, 0.9)
    _, tsd, _ = _twice(torch, 0.9)
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"] == [1, 1]
    assert list(sd["state"]) == list(tsd["state"]) == [1]
