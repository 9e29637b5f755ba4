"""Optimizer state_dict / load_state_dict hooks against torch's: their order (with `prepend`), their
arguments, what a returned dict does, the shallow copy a load pre-hook gets, and removal by handle."""

import copy

import pytest

import distgraph as dg

torch = pytest.importorskip("torch")


def _log(lib):
    """The hooks' calls over a save and a load, then again after removing every handle."""
    opt = lib.optim.SGD([lib.nn.Parameter(lib.zeros(2))], lr=0.1, momentum=0.9)
    calls, handles = [], []

    def tagged(sd, tag):
        return {**sd, "param_groups": [{**g, "tag": tag} for g in sd["param_groups"]]}

    def load_pre(o, sd):
        calls.append(("load_pre", sorted(sd)))
        sd["param_groups"] = [{**g, "lr": 0.5} for g in sd["param_groups"]]  # in place: what gets loaded

    handles += [
        opt.register_state_dict_pre_hook(lambda o: calls.append(("pre", o is opt))),
        opt.register_state_dict_pre_hook(lambda o: calls.append(("pre first", o is opt)), prepend=True),
        opt.register_state_dict_post_hook(lambda o, sd: calls.append(("post", sorted(sd)))),
        opt.register_state_dict_post_hook(lambda o, sd: tagged(sd, "by post"), prepend=True),
        opt.register_load_state_dict_pre_hook(load_pre),
        opt.register_load_state_dict_pre_hook(lambda o, sd: tagged(sd, "by load_pre"), prepend=True),
        opt.register_load_state_dict_post_hook(lambda o: calls.append(("load_post", o.param_groups[0]["lr"]))),
    ]
    sd = opt.state_dict()
    given = copy.deepcopy(sd)
    given["extra"] = 1
    opt.load_state_dict(given)
    results = [sd["param_groups"][0]["tag"], opt.param_groups[0]["tag"], opt.param_groups[0]["lr"], sorted(given)]
    for h in handles:
        h.remove()
    opt.load_state_dict(opt.state_dict())
    return calls, results


def test_state_dict_hooks_run_in_torchs_order_with_torchs_arguments_and_results():
    got = _log(dg)
    want = _log(torch)
    assert got == want
    calls, (saved_tag, loaded_tag, lr, caller_keys) = got
    assert [c[0] for c in calls] == ["pre first", "pre", "post", "load_pre", "load_post"]
    assert (saved_tag, loaded_tag, lr) == ("by post", "by load_pre", 0.5)
    assert caller_keys == ["extra", "param_groups", "state"]  # the caller's dict itself is never changed


def test_a_hook_that_returns_a_dict_replaces_what_state_dict_returns():
    opt = dg.optim.Adam([dg.nn.Parameter(dg.zeros(2))])
    replacement = {"state": {}, "param_groups": []}
    opt.register_state_dict_post_hook(lambda o, sd: replacement)
    assert opt.state_dict() is replacement
