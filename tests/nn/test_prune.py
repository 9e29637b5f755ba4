"""nn.utils.prune against torch 2.13: the deterministic methods on the same weights (masks, pruned
weights, forward, gradients to weight_orig, state_dict, remove); random methods by their counts."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn as nn
from distgraph.nn.utils import prune

torch = pytest.importorskip("torch")
tprune = pytest.importorskip("torch.nn.utils.prune")
INF = float("inf")


def _np(t):
    return t.detach().numpy()


def twin(kind="linear", seed=0):
    """The same layer in torch and distgraph, with equal (tie-free) parameters."""
    torch.manual_seed(seed)
    tm = torch.nn.Linear(6, 4) if kind == "linear" else torch.nn.Conv2d(3, 5, 3)
    dm = nn.Linear(6, 4) if kind == "linear" else nn.Conv2d(3, 5, 3)
    for name, p in tm.named_parameters():
        setattr(dm, name, nn.Parameter(dg.tensor(_np(p))))
    return tm, dm


def inputs(kind):
    shape = (2, 6) if kind == "linear" else (2, 3, 5, 5)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return torch.tensor(x), dg.tensor(x)


def assert_same_pruning(tm, dm, kind="linear", names=("weight",)):
    """Masks, pruned tensors, state_dict, forward and the gradients to the originals all match torch's."""
    for name in names:
        assert isinstance(getattr(dm, name + "_orig"), nn.Parameter)
        assert name not in dm._parameters
        np.testing.assert_array_equal(_np(getattr(dm, name + "_mask")), _np(getattr(tm, name + "_mask")))
        np.testing.assert_allclose(_np(getattr(dm, name)), _np(getattr(tm, name)))
    tsd, dsd = tm.state_dict(), dm.state_dict()
    assert list(dsd) == list(tsd)
    for k in tsd:
        np.testing.assert_array_equal(_np(dsd[k]), _np(tsd[k]))
    tx, dx = inputs(kind)
    tout, dout = tm(tx), dm(dx)
    np.testing.assert_allclose(_np(dout), _np(tout), rtol=1e-5, atol=1e-6)
    (tout**2).sum().backward()
    (dout**2).sum().backward()
    for name in names:
        tg, dgrad = getattr(tm, name + "_orig").grad, getattr(dm, name + "_orig").grad
        np.testing.assert_allclose(_np(dgrad), _np(tg), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amount", [0, 5, 0.3, 0.5, 1.0])
def test_l1_unstructured_matches_torch(amount):
    tm, dm = twin()
    assert prune.l1_unstructured(dm, "weight", amount) is dm
    tprune.l1_unstructured(tm, "weight", amount)
    assert_same_pruning(tm, dm)
    assert prune.is_pruned(dm)


def test_l1_unstructured_importance_scores_match_torch():
    tm, dm = twin()
    scores = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    tprune.l1_unstructured(tm, "weight", 7, importance_scores=torch.tensor(scores))
    prune.l1_unstructured(dm, "weight", 7, importance_scores=dg.tensor(scores))
    assert_same_pruning(tm, dm)


@pytest.mark.parametrize("n", [1, 2, 3, INF, -INF])
@pytest.mark.parametrize("dim", [0, 1, -1, 3])
def test_ln_structured_matches_torch(n, dim):
    tm, dm = twin("conv")
    tprune.ln_structured(tm, "weight", 0.4, n, dim)
    prune.ln_structured(dm, "weight", 0.4, n, dim)
    assert_same_pruning(tm, dm, "conv")


def test_custom_from_mask_matches_torch():
    tm, dm = twin()
    mask = np.random.default_rng(3).integers(0, 2, (4,)).astype(np.float32)
    tprune.custom_from_mask(tm, "bias", torch.tensor(mask))
    prune.custom_from_mask(dm, "bias", dg.tensor(mask))
    assert_same_pruning(tm, dm, names=("bias",))


@pytest.mark.parametrize("amount", [10, 0.25])
def test_global_unstructured_l1_matches_torch(amount):
    (tm1, dm1), (tm2, dm2) = twin(seed=0), twin("conv", seed=1)
    tprune.l1_unstructured(tm1, "weight", 3)  # an already pruned tensor keeps its pruned entries
    prune.l1_unstructured(dm1, "weight", 3)
    scores = np.abs(np.random.default_rng(4).standard_normal((4,))).astype(np.float32)
    tprune.global_unstructured(
        [(tm1, "weight"), (tm1, "bias"), (tm2, "weight")],
        tprune.L1Unstructured,
        importance_scores={(tm1, "bias"): torch.tensor(scores)},
        amount=amount,
    )
    prune.global_unstructured(
        iter([(dm1, "weight"), (dm1, "bias"), (dm2, "weight")]),
        prune.L1Unstructured,
        importance_scores={(dm1, "bias"): dg.tensor(scores)},
        amount=amount,
    )
    assert_same_pruning(tm1, dm1, names=("weight", "bias"))
    assert_same_pruning(tm2, dm2, "conv")
    hook = next(iter(dm1._forward_pre_hooks.values()))
    assert isinstance(hook, prune.PruningContainer) and len(hook) == 2


def test_iterative_pruning_combines_masks_like_torch():
    tm, dm = twin("conv")
    mask = np.random.default_rng(5).integers(0, 2, (5, 3, 3, 3)).astype(np.float32)
    steps = [
        ("l1_unstructured", (20,), {}),
        ("ln_structured", (), {"amount": 2, "n": 2, "dim": 0}),
        ("l1_unstructured", (0.3,), {}),
        ("ln_structured", (), {"amount": 1, "n": 1, "dim": 1}),
        ("custom_from_mask", (), {"mask": mask}),
        ("identity", (), {}),
    ]
    for fn, args, kwargs in steps:
        tk = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        dk = {k: dg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        getattr(tprune, fn)(tm, "weight", *args, **tk)
        getattr(prune, fn)(dm, "weight", *args, **dk)
        np.testing.assert_array_equal(_np(dm.weight_mask), _np(tm.weight_mask))
    hooks = list(dm._forward_pre_hooks.values())
    assert len(hooks) == 1 and isinstance(hooks[0], prune.PruningContainer) and len(hooks[0]) == len(steps)
    assert [type(m).__name__ for m in hooks[0]] == [
        type(m).__name__ for m in next(iter(tm._forward_pre_hooks.values()))
    ]
    assert_same_pruning(tm, dm, "conv")


def test_remove_makes_pruning_permanent_like_torch():
    tm, dm = twin()
    tprune.l1_unstructured(tm, "weight", 0.5)
    prune.l1_unstructured(dm, "weight", 0.5)
    tprune.ln_structured(tm, "weight", 1, 2, 0)
    prune.ln_structured(dm, "weight", 1, 2, 0)
    orig = dm.weight_orig
    assert prune.remove(dm, "weight") is dm
    tprune.remove(tm, "weight")
    assert dm.weight is orig and isinstance(dm.weight, nn.Parameter) and dm.weight.requires_grad
    assert not dm._forward_pre_hooks and not prune.is_pruned(dm)
    assert list(dm.state_dict()) == list(tm.state_dict()) == ["bias", "weight"]
    np.testing.assert_array_equal(_np(dm.weight), _np(tm.weight))
    with pytest.raises(ValueError, match="has to be pruned"):
        prune.remove(dm, "weight")


def test_load_state_dict_into_pruned_module():
    tm, _ = twin(seed=0)
    _, dm = twin(seed=1)
    tprune.l1_unstructured(tm, "weight", 9)
    prune.identity(dm, "weight")
    dm.load_state_dict({k: dg.tensor(_np(v)) for k, v in tm.state_dict().items()})
    dm(inputs("linear")[1])  # as in torch, the forward pre-hook rebuilds `weight` from the loaded orig and mask
    assert_same_pruning(tm, dm)


def test_random_unstructured_counts():
    dg.manual_seed(0)
    m = nn.Linear(10, 8)
    prune.random_unstructured(m, "weight", 0.25)
    assert int((m.weight_mask == 0).sum().item()) == 20
    prune.random_unstructured(m, "weight", 12)  # 12 more among the 60 left
    assert int((m.weight_mask == 0).sum().item()) == 32
    np.testing.assert_array_equal(_np(m.weight), _np(m.weight_orig) * _np(m.weight_mask))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_random_structured_prunes_whole_channels(dim):
    dg.manual_seed(1)
    m = nn.Conv2d(4, 6, 3)
    prune.random_structured(m, "weight", 0.5, dim)
    prune.random_structured(m, "weight", 1, dim)  # one more channel among those left
    mask = _np(m.weight_mask)
    others = tuple(d for d in range(4) if d != dim % 4)
    per_channel = mask.sum(axis=others)
    assert set(per_channel.tolist()) <= {0.0, mask.size / mask.shape[dim]}
    n = mask.shape[dim]
    assert (per_channel == 0).sum() == round(0.5 * n) + 1


@pytest.mark.parametrize(
    ("amount", "error", "match"),
    [
        (-1, ValueError, "non-negative integer"),
        (1.5, ValueError, r"range \[0, 1\]"),
        (-0.1, ValueError, r"range \[0, 1\]"),
        ("0.3", TypeError, "Must be int or float"),
        (25, ValueError, "should be smaller than the number of parameters to prune=24"),
    ],
)
def test_bad_amounts_raise_like_torch_and_leave_module(amount, error, match):
    tm, dm = twin()
    with pytest.raises(error, match=match):
        tprune.l1_unstructured(tm, "weight", amount)
    with pytest.raises(error, match=match):
        prune.l1_unstructured(dm, "weight", amount)
    assert list(dm._parameters) == ["weight", "bias"] and not prune.is_pruned(dm)
    prune.l1_unstructured(dm, "weight", 2)
    with pytest.raises(error):
        prune.l1_unstructured(dm, "weight", amount)
    hook = next(iter(dm._forward_pre_hooks.values()))  # the earlier pruning survives a failed one
    assert isinstance(hook, prune.L1Unstructured) and int((dm.weight_mask == 0).sum().item()) == 2


def test_structured_errors():
    m = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="multidimensional"):
        prune.ln_structured(m, "bias", 1, 2, 0)
    with pytest.raises(IndexError, match="Invalid index 2"):
        prune.random_structured(m, "weight", 1, 2)
    with pytest.raises(ValueError, match="should be smaller"):
        prune.ln_structured(m, "weight", 3, 1, 0)
    with pytest.raises(TypeError, match="unstructured"):
        prune.global_unstructured([(m, "weight")], prune.RandomStructured, amount=1)
    with pytest.raises(ValueError, match="same shape"):
        prune.l1_unstructured(m, "weight", 1, importance_scores=dg.ones(3))
    assert not prune.is_pruned(m)


def test_prune_method_on_a_tensor_matches_torch():
    w = np.random.default_rng(6).standard_normal((4, 5)).astype(np.float32)
    out = prune.LnStructured(2, n=1, dim=1).prune(dg.tensor(w))
    ref = tprune.LnStructured(2, n=1, dim=1).prune(torch.tensor(w))
    np.testing.assert_array_equal(_np(out), _np(ref))


class FooBarPruningMethod(prune.BasePruningMethod):
    """torch's documented pattern for a user method: prune every other entry."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def test_user_pruning_method_subclass():
    m = nn.Linear(4, 3)
    FooBarPruningMethod.apply(m, "bias")
    np.testing.assert_array_equal(_np(m.bias_mask), [0, 1, 0])
    prune.l1_unstructured(m, "bias", 1)  # the one left is the only candidate
    np.testing.assert_array_equal(_np(m.bias_mask), [0, 0, 0])
    assert [type(h).__name__ for h in next(iter(m._forward_pre_hooks.values()))] == [
        "FooBarPruningMethod",
        "L1Unstructured",
    ]
    with pytest.raises(TypeError):
        prune.BasePruningMethod()


def test_l1_ties_go_to_the_lowest_index():
    m = nn.Linear(5, 1, bias=False)
    m.weight = nn.Parameter(dg.tensor([[1.0, 0.5, 1.0, 0.5, 1.0]]))
    prune.l1_unstructured(m, "weight", 3)
    np.testing.assert_array_equal(_np(m.weight_mask), [[0, 0, 1, 0, 1]])


def test_failed_pruning_of_a_container_keeps_its_methods():
    m = nn.Linear(6, 4)
    prune.l1_unstructured(m, "weight", 4)
    prune.l1_unstructured(m, "weight", 4)
    mask = _np(m.weight_mask).copy()
    with pytest.raises(ValueError, match="prune=16"):  # only the 16 unpruned entries are candidates
        prune.l1_unstructured(m, "weight", 17)
    (hook,) = m._forward_pre_hooks.values()
    assert len(hook) == 2
    np.testing.assert_array_equal(_np(m.weight_mask), mask)
