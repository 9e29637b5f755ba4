"""Lazy modules against torch's: reprs and state_dict keys before the first forward, the inferred sizes
and eager class after it, then float64 parity (outputs, input and parameter gradients, running
statistics); an optimizer built before the first forward, loading a state_dict, and the errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn, optim
from distgraph.errors import AutogradError
from tests.nn.test_module_fuzz import module_parity

torch = pytest.importorskip("torch")
TN = torch.nn
rng = np.random.default_rng(0)

CASES = [
    ("LazyLinear", (3,), {}, (2, 5)),
    ("LazyLinear", (2,), {"bias": False}, (4, 3, 1)),
    ("LazyConv1d", (4, 3), {"stride": 2, "padding": 1}, (2, 3, 7)),
    ("LazyConv1d", (2, 2), {"groups": 2, "bias": False}, (4, 6)),  # unbatched
    ("LazyConv2d", (4, 3), {"groups": 2, "padding_mode": "reflect", "padding": 1}, (2, 6, 5, 4)),
    ("LazyBatchNorm1d", (), {}, (4, 3)),
    ("LazyBatchNorm1d", (), {"affine": False, "momentum": None}, (4, 3, 2)),
    ("LazyBatchNorm2d", (), {"track_running_stats": False}, (2, 3, 2, 2)),
    ("LazyBatchNorm3d", (), {"momentum": 0.5}, (2, 3, 2, 1, 2)),
]


@pytest.mark.parametrize("name, args, kwargs, shape", CASES)
def test_lazy_module_matches_torch(name, args, kwargs, shape):
    dm, tm = getattr(nn, name)(*args, **kwargs), getattr(TN, name)(*args, **kwargs)
    assert repr(dm) == repr(tm)
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert dm.has_uninitialized_params() and tm.has_uninitialized_params()
    x = rng.standard_normal(shape)
    dm(dg.tensor(x, dtype=dg.float32)), tm(torch.tensor(x, dtype=torch.float32))
    assert type(dm).__name__ == type(tm).__name__ == name[4:]  # LazyLinear → Linear, ...
    assert not isinstance(dm.weight, nn.UninitializedParameter) if dm.weight is not None else True
    module_parity(dm, tm, [x], passes=2)


def test_optimizer_built_before_the_first_forward_works():
    m = nn.LazyLinear(3)
    opt = optim.Adam(m.parameters(), lr=0.1)
    opt.step()  # no gradients yet: nothing to do, as torch
    x = dg.tensor(rng.standard_normal((4, 2)), dtype=dg.float32)
    m(x).sum().backward()
    before = m.weight.detach().numpy().copy()
    opt.step()
    assert m.weight.shape == (3, 2) and np.abs(m.weight.detach().numpy() - before).max() > 0


def test_load_state_dict_materializes_and_the_first_forward_keeps_the_values():
    src = nn.Linear(4, 3)
    lazy = nn.LazyLinear(3)
    lazy.load_state_dict(src.state_dict())
    np.testing.assert_array_equal(lazy.weight.detach().numpy(), src.weight.detach().numpy())
    x = dg.tensor(rng.standard_normal((2, 4)), dtype=dg.float32)
    np.testing.assert_array_equal(lazy(x).detach().numpy(), src(x).detach().numpy())
    assert repr(lazy) == "Linear(in_features=4, out_features=3, bias=True)"
    seq = nn.Sequential(nn.LazyLinear(3))  # nested: the root's load_state_dict materializes it
    seq.load_state_dict(nn.Sequential(src).state_dict())
    np.testing.assert_array_equal(seq(x).detach().numpy(), src(x).detach().numpy())
    bn = nn.LazyBatchNorm1d()
    bn.load_state_dict(nn.BatchNorm1d(5).state_dict())
    assert tuple(bn.running_mean.shape) == (5,)


def test_uninitialized_placeholders_refuse_their_shape():
    m = nn.LazyConv2d(4, 3)
    with pytest.raises(AutogradError, match="Can't access the shape of an uninitialized parameter"):
        m.weight.shape
    assert repr(m.weight) == "<UninitializedParameter>"
    with pytest.raises(AutogradError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input to LazyConv2d"):
        m(dg.ones(2, 3))
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        nn.LazyConv1d(4, 3, groups=2)(dg.ones(1, 3, 5))


def test_lazy_dtype_and_float64_after_double():
    m = nn.LazyLinear(2, dtype=dg.float64)
    assert m(dg.ones(1, 3, dtype=dg.float64)).dtype == dg.float64
    m = nn.LazyBatchNorm1d().double()
    m(dg.tensor(rng.standard_normal((3, 2))))
    assert m.running_mean.dtype == dg.float64 and m.weight.dtype == dg.float64


def test_deepcopy_and_pickle_of_a_lazy_module_stay_lazy():
    import copy
    import pickle

    for clone in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
        m = clone(nn.LazyBatchNorm1d(dtype=dg.float64))
        assert m.has_uninitialized_params() and isinstance(m.running_mean, nn.UninitializedBuffer)
        m(dg.tensor(rng.standard_normal((3, 2))))
        assert type(m).__name__ == "BatchNorm1d" and m.weight.dtype == dg.float64
