"""A built-in optimizer's `state[p]` reads as torch's: Tensors sharing memory with the arrays the update mutates."""

import copy
import pickle

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

X0 = np.array([1.0, -2.0, 0.5], dtype=np.float32)
GRADS = [
    np.array([0.3, -0.1, 0.2], np.float32),
    np.array([-0.5, 0.4, 0.1], np.float32),
    np.array([0.2, 0.2, -0.3], np.float32),
]

OPTIMIZERS = {
    "Adam": {},
    "AdamW": {},
    "SGD": {"momentum": 0.9},
    "RMSprop": {},
    "Adagrad": {},
    "Adadelta": {},
    "Adamax": {},
    "NAdam": {},
    "RAdam": {},
    "ASGD": {},
    "Rprop": {},
}


def pair(name, steps=0, **kw):
    """(dg param, dg optimizer, torch param, torch optimizer) after `steps` equal steps."""
    options = {"lr": 0.01, **OPTIMIZERS[name], **kw}
    p, tp = dg.nn.Parameter(dg.tensor(X0.copy())), torch.nn.Parameter(torch.tensor(X0.copy()))
    o, to = getattr(dg.optim, name)([p], **options), getattr(torch.optim, name)([tp], **options)
    for g in GRADS[:steps]:
        step(p, o, tp, to, g)
    return p, o, tp, to


def step(p, o, tp, to, g):
    p.grad, tp.grad = dg.tensor(g.copy()), torch.tensor(g.copy())
    o.step()
    to.step()


def assert_state_equal(o, p, to, tp):
    mine, theirs = o.state[p], to.state[tp]
    assert sorted(mine) == sorted(theirs)
    for k, v in theirs.items():
        assert isinstance(mine[k], dg.Tensor), k
        assert str(mine[k].dtype).split(".")[-1] == str(v.dtype).split(".")[-1], k
        np.testing.assert_allclose(mine[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_reads_as_torchs_tensors_after_three_steps(name):
    p, o, tp, to = pair(name, 3)
    assert_state_equal(o, p, to, tp)
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_reads_norm_item_and_identity():
    p, o, tp, to = pair("Adam", 1)
    assert o.state[p]["exp_avg"].norm().item() == pytest.approx(to.state[tp]["exp_avg"].norm().item())
    assert o.state[p]["step"].item() == to.state[tp]["step"].item() == 1.0
    assert o.state[p]["exp_avg"] is o.state[p]["exp_avg"]
    assert np.shares_memory(o.state[p]["exp_avg"].array, o.state[p].arrays()["exp_avg"])


@pytest.mark.parametrize("write", ["zero_", "mul_", "copy_", "data"])
def test_in_place_write_reaches_the_next_step(write):
    p, o, tp, to = pair("Adam", 1)
    for state, lib in ((o.state[p], dg), (to.state[tp], torch)):
        t = state["exp_avg_sq"]
        if write == "zero_":
            t.zero_()
        elif write == "mul_":
            t.mul_(0.5)
        elif write == "copy_":
            t.copy_(lib.ones(3))
        else:
            t.data = lib.full((3,), 0.25)
        state["step"].zero_()
    step(p, o, tp, to, GRADS[1])
    assert_state_equal(o, p, to, tp)
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_assignment_and_deletion_reach_the_next_step():
    p, o, tp, to = pair("Adam", 1)
    o.state[p]["exp_avg"] = dg.ones(3)
    to.state[tp]["exp_avg"] = torch.ones(3)
    o.state[p]["step"] = dg.tensor(5.0)
    to.state[tp]["step"] = torch.tensor(5.0)
    step(p, o, tp, to, GRADS[1])
    assert_state_equal(o, p, to, tp)
    o.state[p] = {"step": dg.tensor(0.0), "exp_avg": dg.zeros(3), "exp_avg_sq": dg.zeros(3)}
    to.state[tp] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}
    step(p, o, tp, to, GRADS[2])
    assert_state_equal(o, p, to, tp)
    del o.state[p]
    del to.state[tp]
    step(p, o, tp, to, GRADS[0])
    assert_state_equal(o, p, to, tp)
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_move_state_idiom_and_mapping_behaviour():
    p, o, tp, to = pair("Adam", 1)
    for s in o.state.values():
        for k, v in s.items():
            if isinstance(v, dg.Tensor):
                s[k] = v.to("cpu")
    step(p, o, tp, to, GRADS[1])
    assert_state_equal(o, p, to, tp)
    s = o.state[p]
    assert len(s) == 3 and "exp_avg" in s and set(s.keys()) == {"step", "exp_avg", "exp_avg_sq"}
    assert s.get("missing") is None and all(isinstance(v, dg.Tensor) for v in s.values())
    assert o.state[dg.nn.Parameter(dg.ones(1))] == {}
    assert len(o.state) == 2 and p in o.state
    assert repr(o.state).startswith("defaultdict(<class 'dict'>, {")


def test_deepcopy_and_pickle_copy_the_state():
    p, o, tp, to = pair("Adam", 2)
    o2 = copy.deepcopy(o)
    p2 = o2.param_groups[0]["params"][0]
    assert_state_equal(o2, p2, to, tp)
    assert not np.shares_memory(o2.state[p2]["exp_avg"].array, o.state[p]["exp_avg"].array)
    o2.state[p2]["exp_avg"].zero_()
    assert o.state[p]["exp_avg"].abs().sum().item() > 0
    state = pickle.loads(pickle.dumps(o.state))
    np.testing.assert_array_equal(next(iter(state.values()))["exp_avg"].numpy(), o.state[p]["exp_avg"].numpy())


def test_state_dict_round_trips_and_loads_tensor_state():
    p, o, tp, to = pair("Adam", 2)
    sd = o.state_dict()
    assert sd["state"][0]["step"] == 2 and isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    p2 = dg.nn.Parameter(dg.tensor(X0.copy()))
    o2 = dg.optim.Adam([p2], lr=0.01)
    o2.load_state_dict(sd)
    assert_state_equal(o2, p2, to, tp)
    o3 = dg.optim.Adam([dg.nn.Parameter(dg.tensor(X0.copy()))], lr=0.01)
    o3.load_state_dict({"state": {0: dict(o.state[p].items())}, "param_groups": sd["param_groups"]})
    p3 = o3.param_groups[0]["params"][0]
    assert_state_equal(o3, p3, to, tp)
    assert not np.shares_memory(o3.state[p3]["exp_avg"].array, o.state[p]["exp_avg"].array)


def test_user_subclass_keeps_a_plain_defaultdict():
    class Mine(dg.optim.Optimizer):
        def step(self, closure=None):
            for p in self.param_groups[0]["params"]:
                self.state[p]["n"] = self.state[p].get("n", 0) + 1

    p = dg.nn.Parameter(dg.ones(2))
    o = Mine([p], {"lr": 0.1})
    o.step()
    assert type(o.state[p]) is dict and o.state[p]["n"] == 1


@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD"])
def test_a_number_read_before_a_step_reads_the_new_value_as_torchs(name):
    """torch's step (NAdam's mu_product, ASGD's eta and mu) is one tensor the update changes in place: a reference
    kept from before the step reads the new value, and a write into it reaches the next step."""
    p, o, tp, to = pair(name, steps=1)
    held = {k: o.state[p][k] for k in to.state[tp] if to.state[tp][k].ndim == 0}
    their = {k: to.state[tp][k] for k in held}
    step(p, o, tp, to, GRADS[1])
    for k in held:
        np.testing.assert_allclose(held[k].item(), their[k].item(), rtol=1e-6, err_msg=k)
    held["step"].fill_(0)
    their["step"].fill_(0)
    step(p, o, tp, to, GRADS[2])
    assert_state_equal(o, p, to, tp)
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_parameters_state_copies_and_merges_as_a_dict():
    p, o, tp, to = pair("Adam", steps=1)
    entries = o.state[p]
    copied = entries.copy()
    assert type(copied) is dict and copied["exp_avg"] is entries["exp_avg"]
    assert sorted(entries | {"extra": 1}) == sorted({**to.state[tp], "extra": 1})
    assert sorted({"extra": 1} | entries) == sorted({"extra": 1} | to.state[tp])
