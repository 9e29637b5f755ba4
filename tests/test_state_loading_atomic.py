"""A failing Module.load_state_dict / Optimizer.load_state_dict changes nothing and names every problem."""

import copy

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn, optim
from distgraph.errors import ConfigError


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _arrays(module):
    """Every parameter and buffer: (the tensor object, its class, a copy of its array, its version counter)."""
    sd = module.state_dict(keep_vars=True)
    return {k: (t, type(t), t.array.copy(), t._vc[0]) for k, t in sd.items() if isinstance(t, dg.Tensor)}


def _assert_unchanged(module, before):
    after = module.state_dict(keep_vars=True)
    assert [k for k in after if isinstance(after[k], dg.Tensor)] == list(before)
    for k, (t, cls, values, version) in before.items():
        assert after[k] is t and type(t) is cls, k
        assert t.array.dtype == values.dtype and np.array_equal(t.array, values, equal_nan=True), k
        assert t._vc[0] == version, k  # nothing was written, not even the same values


def _shifted(module):
    return {k: v.numpy() + 1 for k, v in module.state_dict().items()}


# ---- Module.load_state_dict ---------------------------------------------------------------------------------
def test_a_failing_load_changes_nothing_and_lists_every_problem():
    net, sd = _net(), None
    before = _arrays(net)
    sd = _shifted(net)
    sd["2.weight"] = np.zeros((5, 5))
    sd["1.running_mean"] = "x"
    del sd["0.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(nn.StateDictError) as err:
        net.load_state_dict(sd)
    lines = str(err.value).split("\n\t")
    assert lines == [
        "Error(s) in loading state_dict for Sequential:",
        'Missing key(s) in state_dict: "0.bias". ',
        'Unexpected key(s) in state_dict: "extra". ',
        'While copying the parameter named "1.running_mean", expected a Tensor, an array or a number from '
        "checkpoint but received <class 'str'>",
        "size mismatch for 2.weight: copying a param with shape torch.Size([5, 5]) from checkpoint, the shape in "
        "current model is torch.Size([2, 4]).",
    ]
    _assert_unchanged(net, before)


@pytest.mark.parametrize(
    "value, received",
    [
        ("x", "<class 'str'>"),
        (None, "<class 'NoneType'>"),
        ({"a": 1}, "<class 'dict'>"),
        (np.array(["a", "b", "c", "d"]), "<class 'numpy.ndarray'> of dtype <U1"),
        (np.array([object()] * 4), "<class 'numpy.ndarray'> of dtype object"),
        ([[1.0, 2.0], [3.0]], "<class 'list'> ("),
    ],
    ids=["str", "None", "dict", "str-array", "object-array", "ragged-list"],
)
def test_a_value_that_is_not_numeric_is_named_with_its_key_and_type(value, received):
    lin = nn.Linear(2, 4)
    before = _arrays(lin)
    with pytest.raises(nn.StateDictError) as err:
        lin.load_state_dict({"weight": lin.weight.detach().numpy(), "bias": value})
    assert 'While copying the parameter named "bias", expected a Tensor, an array or a number' in str(err.value)
    assert f"received {received}" in str(err.value)
    assert "size mismatch" not in str(err.value)  # not "copying a param with shape ()"
    _assert_unchanged(lin, before)


def test_a_bad_value_in_a_0d_buffer_is_reported_with_the_others():
    bn = nn.BatchNorm1d(2)
    before = _arrays(bn)
    sd = _shifted(bn)
    sd["num_batches_tracked"], sd["weight"] = "three", np.zeros(3)
    with pytest.raises(nn.StateDictError, match=r'(?s)size mismatch for weight.*"num_batches_tracked"'):
        bn.load_state_dict(sd)
    _assert_unchanged(bn, before)


def test_numbers_lists_and_old_1_element_values_still_load():
    bn = nn.BatchNorm1d(2)
    bn.load_state_dict({"weight": [1.0, 2.0], "bias": (0, 1), "running_mean": np.zeros(2), "running_var": [1, 1],
                        "num_batches_tracked": [7]})  # fmt: skip
    assert bn.weight.detach().numpy().tolist() == [1.0, 2.0] and int(bn.num_batches_tracked.item()) == 7


def test_a_failing_load_leaves_a_lazy_module_lazy():
    lazy = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2))
    sd = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)).state_dict()
    sd["1.bias"] = np.zeros(9)
    with pytest.raises(nn.StateDictError, match="size mismatch for 1.bias"):
        lazy.load_state_dict(sd)
    assert lazy[0].has_uninitialized_params()
    sd["1.bias"] = np.zeros(2)
    lazy.load_state_dict(sd)
    assert not lazy[0].has_uninitialized_params() and lazy[0].weight.shape == (3, 5)


class _Counter(nn.Module):
    """A module with extra state whose set_extra_state refuses what it cannot use."""

    def __init__(self):
        super().__init__()
        self.lin, self.count = nn.Linear(2, 2), 0

    def get_extra_state(self):
        return {"count": self.count}

    def set_extra_state(self, state):
        if not isinstance(state, dict):
            raise ValueError(f"_Counter: bad extra state {state!r}")
        self.count = state["count"]


def test_a_set_extra_state_that_refuses_its_value_leaves_the_model_as_it_was():
    outer = nn.Sequential(_Counter(), _Counter())
    outer[0].count = 5
    before = _arrays(outer)
    sd = {k: v for k, v in outer.state_dict().items()}
    sd = {k: (v.numpy() + 1 if hasattr(v, "numpy") else v) for k, v in sd.items()}
    sd["0._extra_state"], sd["1._extra_state"] = {"count": 9}, "bad"
    with pytest.raises(ValueError, match="bad extra state"):
        outer.load_state_dict(sd)
    assert outer[0].count == 5 and outer[1].count == 0
    for k, (t, _, values, _) in before.items():  # values put back (the versions moved: they were written)
        assert outer.state_dict(keep_vars=True)[k] is t and np.array_equal(t.array, values), k


def test_a_post_hook_that_adds_a_missing_key_makes_the_load_fail_unchanged():
    net = _net()
    before = _arrays(net)
    net.register_load_state_dict_post_hook(lambda mod, keys: keys.missing_keys.append("ghost"))
    with pytest.raises(nn.StateDictError, match='Missing key\\(s\\) in state_dict: "ghost"'):
        net.load_state_dict(_shifted(net))
    for k, (t, cls, values, _) in before.items():
        assert net.state_dict(keep_vars=True)[k] is t and np.array_equal(t.array, values), k


def test_a_post_hook_sees_the_loaded_values_and_may_clear_the_missing_keys():
    net, seen = _net(), []
    sd = _shifted(net)
    del sd["0.bias"]

    def hook(mod, keys):
        seen.append(mod[2].bias.detach().numpy().copy())
        keys.missing_keys.clear()

    net.register_load_state_dict_post_hook(hook)
    assert tuple(net.load_state_dict(sd)) == ([], [])
    assert np.array_equal(seen[0], sd["2.bias"]) and np.array_equal(net[0].weight.detach().numpy(), sd["0.weight"])


def test_assign_is_all_or_nothing_too():
    lin = nn.Linear(2, 3)
    before = _arrays(lin)
    with pytest.raises(nn.StateDictError, match="size mismatch for bias"):
        lin.load_state_dict({"weight": dg.zeros(3, 2), "bias": dg.zeros(4)}, assign=True)
    _assert_unchanged(lin, before)


def test_module_errors_match_torch_but_torch_copies_what_fits():
    torch = pytest.importorskip("torch")
    t_net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    d_net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    t_sd = {k: v + 1 for k, v in t_net.state_dict().items()}
    t_sd["0.bias"], t_sd["1.weight"] = "x", torch.zeros(5, 5)
    d_sd = {k: v if isinstance(v, str) else v.numpy() for k, v in t_sd.items()}
    t_before = {k: v.clone() for k, v in t_net.state_dict().items()}
    d_before = _arrays(d_net)
    with pytest.raises(RuntimeError) as t_err:
        t_net.load_state_dict(t_sd)
    with pytest.raises(nn.StateDictError) as d_err:
        d_net.load_state_dict(d_sd)
    t_lines, d_lines = str(t_err.value).split("\n\t"), str(d_err.value).split("\n\t")
    assert len(t_lines) == len(d_lines) == 3 and t_lines[0] == d_lines[0]
    assert t_lines[1].startswith('While copying the parameter named "0.bias", expected torch.Tensor')
    assert d_lines[1].startswith('While copying the parameter named "0.bias", expected a Tensor')
    assert t_lines[1].endswith("received <class 'str'>") and d_lines[1].endswith("received <class 'str'>")
    assert t_lines[2].split(":")[0] == d_lines[2].split(":")[0] == "size mismatch for 1.weight"
    # torch copied the entries that fit before raising; distgraph copies nothing
    assert not torch.equal(t_net.state_dict()["0.weight"], t_before["0.weight"])
    _assert_unchanged(d_net, d_before)


# ---- Optimizer.load_state_dict ------------------------------------------------------------------------------
def _stepped(cls=optim.Adam, **kw):
    a, b = dg.zeros(2, requires_grad=True), dg.zeros(3, requires_grad=True)
    opt = cls([a, b], lr=0.1, **kw)
    a.grad, b.grad = dg.ones(2), dg.ones(3)
    opt.step()
    return opt, a, b


def _opt_snapshot(opt):
    state = {id(p): {k: (v, copy.deepcopy(v)) for k, v in s.items()} for p, s in opt.state.items()}
    groups = [(g, {k: v for k, v in g.items()}) for g in opt.param_groups]
    return opt.state, state, groups


def _assert_opt_unchanged(opt, snap):
    state_obj, state, groups = snap
    assert opt.state is state_obj and {id(p) for p in opt.state} == set(state)
    for p, s in opt.state.items():
        assert list(s) == list(state[id(p)])
        for k, (obj, values) in state[id(p)].items():
            assert s[k] is obj and np.array_equal(np.asarray(s[k]), np.asarray(values)), k
    assert [g for g, _ in groups] == opt.param_groups
    for g, kept in groups:
        assert g == kept and all(g[k] is kept[k] for k in kept)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd["param_groups"][0].update(lr=-1.0), "invalid learning rate lr=-1.0"),
        (lambda sd: sd["param_groups"][0].update(betas=(0.9, 1.5)), "beta"),
        (lambda sd: sd["state"][1].update(exp_avg=np.zeros(7)), r"'exp_avg' has shape \(7,\), parameter has \(3,\)"),
        (lambda sd: sd["state"][1].update(step="x"), "state 'step' must be a number, got 'x'"),
        (lambda sd: sd["state"].update({1: 5}), "the state of parameter 1 must be a dict, got int"),
        (lambda sd: sd["state"].update({"a": {}}), "parameter index 'a' is not an integer"),
        (lambda sd: sd["param_groups"][0].pop("params"), "param group 0 must be a dict with a 'params' list"),
        (lambda sd: sd.update(state=[1]), "'state' must be a dict by parameter index, got list"),
        (lambda sd: sd.pop("state"), r"expected a dict with 'state' and 'param_groups', got keys \['param_groups'\]"),
    ],
    ids=[
        "negative-lr",
        "bad-betas",
        "state-shape",
        "bad-step",
        "state-not-dict",
        "bad-index",
        "no-params",
        "state-list",
        "no-state",
    ],  # fmt: skip
)
def test_a_failing_optimizer_load_names_the_problem_and_changes_nothing(edit, match):
    src, _, _ = _stepped()
    sd = src.state_dict()
    for s in sd["state"].values():
        for k in s:
            s[k] = s[k] * 3 if hasattr(s[k], "shape") else s[k] + 4
    sd["param_groups"][0]["lr"] = 0.5
    edit(sd)
    opt, _, _ = _stepped()
    snap = _opt_snapshot(opt)
    with pytest.raises(ConfigError, match=match) as err:
        opt.load_state_dict(sd)
    assert "Adam.load_state_dict" in str(err.value) or "Adam:" in str(err.value)
    _assert_opt_unchanged(opt, snap)


def test_group_count_and_size_mismatches_raise_torchs_errors():
    src, a, b = _stepped()
    sd = src.state_dict()
    two = optim.Adam([{"params": [a]}, {"params": [b]}])
    snap = _opt_snapshot(two)
    with pytest.raises(ConfigError, match="loaded state dict has a different number of parameter groups"):
        two.load_state_dict(sd)
    _assert_opt_unchanged(two, snap)
    with pytest.raises(ConfigError, match="loaded state dict contains a parameter group that doesn't match the size"):
        optim.Adam([a]).load_state_dict(sd)


def test_group_mismatch_messages_are_torchs():
    torch = pytest.importorskip("torch")
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    sd = torch.optim.Adam([a, b]).state_dict()
    with pytest.raises(ValueError, match="loaded state dict has a different number of parameter groups"):
        torch.optim.Adam([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="loaded state dict contains a parameter group that doesn't match the size"):
        torch.optim.Adam([a]).load_state_dict(sd)


def test_foreign_state_keys_are_kept_as_torch_keeps_them():
    """torch's SGD takes an Adam's state (exp_avg, ...) without a word; so does distgraph (for torch's
    checkpoints, whose keys vary between versions and kernels), and SGD's update ignores them."""
    adam, a, b = _stepped()
    sgd = optim.SGD([a, b], lr=0.1, momentum=0.9)
    sgd.load_state_dict(adam.state_dict())
    assert set(sgd.state[a]) == {"step", "exp_avg", "exp_avg_sq"}
    # the saved group's keys come back, Adam's betas too, as torch's load keeps them; SGD's own options that the
    # saved group lacks keep their values (torch's would be missing, and its step would fail on 'momentum')
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["betas"] == (0.9, 0.999)
    a.grad, b.grad = dg.ones(2), dg.ones(3)
    sgd.step()
    assert "momentum_buffer" in sgd.state[a]


def test_torch_keeps_foreign_state_keys_too():
    torch = pytest.importorskip("torch")
    p = torch.zeros(2, requires_grad=True)
    adam = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(2)
    adam.step()
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sgd.load_state_dict(adam.state_dict())
    assert set(sgd.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
