"""nn.utils.parametrize, nn.utils.parametrizations and the older weight/spectral-norm hooks against torch
(float64): state_dict keys, forward values and the gradients that reach the originals over several
optimizer steps (spectral norm's power iteration started from torch's own u, v), and torch's errors."""

import warnings

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph import optim
from distgraph.nn.utils import parametrizations as P
from distgraph.nn.utils import parametrize

torch = pytest.importorskip("torch")
TP = torch.nn.utils.parametrizations
rng = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy()


def _load(dm, tm):
    dm.load_state_dict({k: _np(v) for k, v in tm.state_dict().items()})


def _train_alongside(dm, tm, in_shape, steps=3, train=True):
    """Forward, backward and an SGD step in both; every output, state entry and gradient must agree."""
    dm.train(train), tm.train(train)
    d_opt, t_opt = optim.SGD(dm.parameters(), lr=0.1), torch.optim.SGD(tm.parameters(), lr=0.1)
    for _ in range(steps):
        x = rng.standard_normal(in_shape)
        d_out, t_out = dm(dg.tensor(x)), tm(torch.tensor(x))
        np.testing.assert_allclose(_np(d_out), _np(t_out), rtol=1e-10, atol=1e-12)
        seed = rng.standard_normal(tuple(t_out.shape))
        d_out.backward(dg.tensor(seed)), t_out.backward(torch.tensor(seed))
        for (dn, dp), (tn, tp) in zip(dm.named_parameters(), tm.named_parameters(), strict=True):
            assert dn == tn
            np.testing.assert_allclose(_np(dp.grad), _np(tp.grad), rtol=1e-9, atol=1e-12, err_msg=dn)
        d_opt.step(), t_opt.step(), d_opt.zero_grad(), t_opt.zero_grad()
        for (dk, dv), (tk, tv) in zip(dm.state_dict().items(), tm.state_dict().items(), strict=True):
            assert dk == tk
            np.testing.assert_allclose(_np(dv), _np(tv), rtol=1e-9, atol=1e-12, err_msg=dk)


@pytest.mark.parametrize("dim", [0, 1, -1, None])
def test_weight_norm_matches_torch(dim):
    tm, dm = torch.nn.Linear(3, 4).double(), nn.Linear(3, 4).double()
    _load(dm, tm)
    TP.weight_norm(tm, dim=dim), P.weight_norm(dm, dim=dim)
    assert list(dm.state_dict()) == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert type(dm).__name__ == "ParametrizedLinear" and isinstance(dm, nn.Linear)
    _train_alongside(dm, tm, (2, 3))


def test_weight_norm_on_a_conv_weight_matches_torch():
    tm, dm = torch.nn.Conv2d(2, 3, 3).double(), nn.Conv2d(2, 3, 3).double()
    _load(dm, tm)
    TP.weight_norm(tm, dim=1), P.weight_norm(dm, dim=1)
    _train_alongside(dm, tm, (1, 2, 5, 5))


@pytest.mark.parametrize(
    "make, in_shape, kwargs",
    [
        (lambda lib: lib.nn.Linear(3, 4), (2, 3), {}),
        (lambda lib: lib.nn.Conv2d(2, 3, 3), (1, 2, 5, 5), dict(n_power_iterations=2)),
        (lambda lib: lib.nn.ConvTranspose2d(2, 3, 3), (1, 2, 4, 4), {}),  # dim 1 by default
        (lambda lib: lib.nn.Linear(4, 3), (2, 4), dict(dim=1, eps=1e-6)),
    ],
)
@pytest.mark.parametrize("train", [True, False])
def test_spectral_norm_matches_torch_from_the_same_u_v(make, in_shape, kwargs, train):
    tm, dm = make(torch).double(), make(dg).double()
    TP.spectral_norm(tm, **kwargs), P.spectral_norm(dm, **kwargs)
    assert list(dm.state_dict()) == list(tm.state_dict())  # ..., parametrizations.weight.0._u, ..._v
    _load(dm, tm)  # torch's weight, and torch's u and v after its 15 initial power iterations
    _train_alongside(dm, tm, in_shape, train=train)


def test_spectral_norm_of_a_vector_normalizes_it():
    m = nn.Module()
    m.w = nn.Parameter(dg.tensor([3.0, 4.0], dtype=dg.float64))
    P.spectral_norm(m, "w")
    np.testing.assert_allclose(_np(m.w), [0.6, 0.8])


class Symmetric(nn.Module):
    def forward(self, x):
        return x.triu() + x.triu(1).transpose(0, 1)

    def right_inverse(self, a):
        return a.triu()


class Scale(nn.Module):
    def forward(self, x):
        return 2 * x

    def right_inverse(self, a):
        return a / 2


def test_a_parametrized_tensor_is_recomputed_from_its_original_on_each_access():
    m = nn.Linear(3, 3).double()
    weight = m.weight
    parametrize.register_parametrization(m, "weight", Symmetric())
    assert m.parametrizations.weight.original is weight  # the optimizer's Parameter keeps being trained
    assert parametrize.is_parametrized(m) and parametrize.is_parametrized(m, "weight")
    assert not parametrize.is_parametrized(m, "bias")
    w = _np(m.weight)
    np.testing.assert_array_equal(w, w.T)
    with dg.no_grad():
        weight.add_(1.0)
    np.testing.assert_allclose(_np(m.weight), w + np.triu(np.ones((3, 3))) + np.triu(np.ones((3, 3)), 1).T)
    m.weight.sum().backward()  # d/dW of sum(triu(W) + triu(W, 1)ᵀ): 1 on the diagonal, 2 above it
    np.testing.assert_array_equal(weight.grad.numpy(), np.triu(np.ones((3, 3))) + np.triu(np.ones((3, 3)), 1))


def test_assigning_runs_right_inverse_and_stacked_parametrizations_compose():
    m = nn.Linear(2, 2).double()
    parametrize.register_parametrization(m, "weight", Symmetric())
    parametrize.register_parametrization(m, "weight", Scale())
    a = dg.tensor([[1.0, 2.0], [2.0, 5.0]], dtype=dg.float64)
    m.weight = a
    np.testing.assert_allclose(_np(m.weight), _np(a))
    np.testing.assert_allclose(_np(m.parametrizations.weight.original), [[0.5, 1.0], [0.0, 2.5]])


def test_cached_computes_a_parametrization_once():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(1)
            return x

    m = nn.Linear(2, 2)
    parametrize.register_parametrization(m, "weight", Counting())
    calls.clear()
    with parametrize.cached():
        assert m.weight is m.weight
    assert len(calls) == 1
    m.weight, m.weight
    assert len(calls) == 3


@pytest.mark.parametrize("leave_parametrized", [True, False])
def test_remove_parametrizations_restores_a_plain_parameter(leave_parametrized):
    m = nn.Linear(2, 2).double()
    original = m.weight
    before = _np(m.weight).copy()
    parametrize.register_parametrization(m, "weight", Scale())
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=leave_parametrized)
    assert type(m) is nn.Linear and m.weight is original and "parametrizations" not in m._modules
    # registering ran Scale.right_inverse (original = weight / 2): leaving it parametrized keeps 2·original
    np.testing.assert_allclose(_np(m.weight), before if leave_parametrized else before / 2)
    assert list(m.state_dict()) == ["bias", "weight"]  # re-registered last, as torch


def test_weight_norm_removal_keeps_its_value():
    m = nn.Linear(3, 2).double()
    before = _np(m.weight).copy()
    P.weight_norm(m)
    parametrize.remove_parametrizations(m, "weight")
    np.testing.assert_allclose(_np(m.weight), before, rtol=1e-12)
    assert isinstance(m.weight, nn.Parameter)
    with pytest.raises(ValueError, match="Cannot leave unparametrized"):
        parametrize.remove_parametrizations(P.weight_norm(m), "weight", leave_parametrized=False)


def test_parametrization_errors_read_as_torch():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="does not have a parameter, a buffer, or a parametrized element with name"):
        parametrize.register_parametrization(m, "nope", Scale())
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        parametrize.remove_parametrizations(m, "weight")

    class Flatten(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(ValueError, match="may not change the shape of the tensor, unless `unsafe` flag is enabled"):
        parametrize.register_parametrization(m, "weight", Flatten())
    parametrize.register_parametrization(m, "weight", Scale())
    with pytest.raises(ValueError, match="may not change the shape of the tensor, unless the `unsafe` flag"):
        parametrize.register_parametrization(m, "weight", Flatten())
    with pytest.raises(RuntimeError, match="Serialization of parametrized modules is only supported"):
        m.__getstate__()
    with pytest.raises(IndexError, match=r"expected to be in range of \[-2, 1\] but got 2"):
        P.spectral_norm(nn.Linear(2, 2), dim=2)
    with pytest.raises(ValueError, match="Expected n_power_iterations to be positive"):
        P.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)


def test_a_parametrized_module_deep_copies():
    import copy

    m = P.weight_norm(nn.Linear(2, 2).double())
    c = copy.deepcopy(m)
    assert c.parametrizations.weight.original0 is not m.parametrizations.weight.original0
    np.testing.assert_array_equal(_np(c.weight), _np(m.weight))


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm"])
def test_older_hook_based_norms_match_torch(kind):
    tm, dm = torch.nn.Linear(3, 4).double(), nn.Linear(3, 4).double()
    _load(dm, tm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        getattr(torch.nn.utils, kind)(tm), getattr(nn.utils, kind)(dm)
    assert list(dm.state_dict()) == list(tm.state_dict())  # weight_g/_v; weight_orig/_u/_v
    _load(dm, tm)
    _train_alongside(dm, tm, (2, 3))
    getattr(torch.nn.utils, "remove_" + kind)(tm), getattr(nn.utils, "remove_" + kind)(dm)
    assert list(dm.state_dict()) == list(tm.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(_np(dm.weight), _np(tm.weight), rtol=1e-12)
    with pytest.raises(ValueError, match=f"{kind} of 'weight' not found in"):
        getattr(nn.utils, "remove_" + kind)(dm)


def test_older_weight_norm_warns_and_refuses_a_second_hook():
    m = nn.Linear(2, 2)
    with pytest.warns(FutureWarning, match="deprecated in favor of `torch.nn.utils.parametrizations.weight_norm`"):
        nn.utils.weight_norm(m)
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks on the same parameter weight"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            nn.utils.weight_norm(m)
