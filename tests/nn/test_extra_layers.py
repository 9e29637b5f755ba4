"""Distances and margin / embedding losses against torch: float64 values and gradients (tests/parity.py's
check), finite differences, float32, reductions, the modules' reprs and state, and the errors."""

import random

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import AutogradError, DTypeError, IndexOutOfRangeError, ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
TF, TN = torch.nn.functional, torch.nn
rng = np.random.default_rng(0)
REDUCTIONS = ["mean", "sum", "none"]
INF = float("inf")


def _gradcheck(fn, *arrays):
    inputs = [dg.tensor(a, requires_grad=True) for a in arrays]
    assert dg.autograd.gradcheck(fn, inputs)


# ---- pairwise_distance --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, INF, -INF, 0.0])
@pytest.mark.parametrize("shapes", [((4, 5), (4, 5)), ((5,), (3, 5)), ((2, 1, 3), (4, 3)), ((), ()), ((3,), (3,))])
def test_pairwise_distance_matches_torch(p, shapes):
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    for keepdim in (False, True):
        check(lambda x, y: F.pairwise_distance(x, y, p, 1e-6, keepdim),
              lambda x, y: TF.pairwise_distance(x, y, p, 1e-6, keepdim), a, b)  # fmt: skip


def test_pairwise_distance_gradcheck_eps_and_zero_distance():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _gradcheck(lambda x, y: F.pairwise_distance(x, y, 3.0, eps=0.1), a, b)
    same = rng.standard_normal((2, 3))  # x1 − x2 + eps = 0: the norm's gradient is 0 there, not NaN
    check(lambda x, y: F.pairwise_distance(x, y, eps=0.0), lambda x, y: TF.pairwise_distance(x, y, eps=0.0), same, same)


def test_pairwise_distance_dtypes():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check(F.pairwise_distance, TF.pairwise_distance, a, b, dtype=np.float32, rtol=1e-5, atol=1e-6)
    ia, ib = rng.integers(-3, 3, (2, 5)), rng.integers(-3, 3, (5,))
    out = check(F.pairwise_distance, TF.pairwise_distance, ia, ib, grad=False)
    assert out.dtype == dg.float32


def test_pairwise_distance_errors():
    with pytest.raises(ShapeError, match=r"pairwise_distance: x1 \(3, 4\) and x2 \(2, 4\) do not broadcast"):
        F.pairwise_distance(dg.ones(3, 4), dg.ones(2, 4))
    with pytest.raises(TypeError, match="pairwise_distance: x2 must be a Tensor"):
        F.pairwise_distance(dg.ones(3), [1.0, 2.0, 3.0])


# ---- triplet losses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_triplet_margin_loss_matches_torch(reduction, swap, p):
    a, pos, neg = (rng.standard_normal((6, 4)) for _ in range(3))
    for margin in (1.0, 0.3, 5.0):
        check(lambda x, y, z: F.triplet_margin_loss(x, y, z, margin, p, swap=swap, reduction=reduction),
              lambda x, y, z: TF.triplet_margin_loss(x, y, z, margin, p, swap=swap, reduction=reduction),
              a, pos, neg)  # fmt: skip
    _gradcheck(lambda x, y, z: F.triplet_margin_loss(x, y, z, 2.0, p, swap=swap, reduction=reduction), a, pos, neg)


def test_triplet_margin_loss_1d_and_float32():
    a, pos, neg = (rng.standard_normal(5) for _ in range(3))
    check(F.triplet_margin_loss, TF.triplet_margin_loss, a, pos, neg)
    a, pos, neg = (rng.standard_normal((4, 5)) for _ in range(3))
    check(F.triplet_margin_loss, TF.triplet_margin_loss, a, pos, neg, dtype=np.float32, rtol=1e-5, atol=1e-6)


def _cos_dist(x, y):
    return 1.0 - F.cosine_similarity(x, y)


def _torch_cos_dist(x, y):
    return 1.0 - TF.cosine_similarity(x, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_margin_with_distance_loss_matches_torch(reduction, swap):
    a, pos, neg = (rng.standard_normal((5, 3)) for _ in range(3))
    for dist, tdist in (
        (None, None),
        (_cos_dist, _torch_cos_dist),
        (nn.PairwiseDistance(1.0), TN.PairwiseDistance(1.0)),
    ):
        kw, tkw = dict(distance_function=dist, swap=swap, reduction=reduction), dict(distance_function=tdist, swap=swap,
                                                                                      reduction=reduction)  # fmt: skip
        check(lambda x, y, z: F.triplet_margin_with_distance_loss(x, y, z, margin=0.5, **kw),
              lambda x, y, z: TF.triplet_margin_with_distance_loss(x, y, z, margin=0.5, **tkw), a, pos, neg)  # fmt: skip


def test_triplet_errors():
    a, b = dg.ones(2, 3), dg.ones(3)
    with pytest.raises(ShapeError, match="anchor 2D, positive 1D, and negative 2D"):
        F.triplet_margin_loss(a, b, a)
    with pytest.raises(ValueError, match="triplet_margin_loss: margin must be greater than 0, got 0"):
        F.triplet_margin_loss(a, a, a, margin=0)
    with pytest.raises(ValueError, match="triplet_margin_with_distance_loss: 'avg' is not a valid"):
        F.triplet_margin_with_distance_loss(a, a, a, reduction="avg")
    with pytest.raises(ValueError, match="got -1.0 instead"):
        nn.TripletMarginLoss(margin=-1.0)
    with pytest.raises(ValueError, match="triplet_margin_loss: 'avg' is not a valid value for reduction"):
        F.triplet_margin_loss(a, a, a, reduction="avg")


# ---- hinge and cosine embedding losses ----------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding_loss_matches_torch(reduction):
    x = np.round(rng.standard_normal((4, 5)) * 2) / 2  # values on the margin: clamp_min's kink
    t = rng.choice([-1.0, 1.0, 0.0], (4, 5))  # a label other than ±1 takes both terms, as torch
    for margin in (1.0, 0.5, -0.5):
        check(lambda a, b: F.hinge_embedding_loss(a, b, margin, reduction=reduction),
              lambda a, b: TF.hinge_embedding_loss(a, b, margin, reduction=reduction), x, t)  # fmt: skip
    check(lambda a: F.hinge_embedding_loss(a, dg.tensor(t[0]), reduction=reduction),  # broadcast (5,) target
          lambda a: TF.hinge_embedding_loss(a, torch.tensor(t[0]), reduction=reduction), x)  # fmt: skip
    it = rng.choice([-1, 1], (4, 5))
    check(lambda a: F.hinge_embedding_loss(a, dg.tensor(it)), lambda a: TF.hinge_embedding_loss(a, torch.tensor(it)),
          x, dtype=np.float32, rtol=1e-6)  # fmt: skip


def test_hinge_embedding_loss_gradcheck_and_error():
    t = dg.tensor(rng.choice([-1.0, 1.0], (3, 4)))
    _gradcheck(lambda a: F.hinge_embedding_loss(a, t, 0.7, reduction="sum"), rng.standard_normal((3, 4)) + 0.05)
    with pytest.raises(ShapeError, match=r"hinge_embedding_loss: input \(3, 4\) and target \(3,\) do not broadcast"):
        F.hinge_embedding_loss(dg.ones(3, 4), dg.ones(3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_embedding_loss_matches_torch(reduction):
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    t = np.array([1, -1, 0, 1, -1, -1])
    for margin in (0.0, 0.3, -0.5):
        check(lambda x, y: F.cosine_embedding_loss(x, y, dg.tensor(t), margin, reduction=reduction),
              lambda x, y: TF.cosine_embedding_loss(x, y, torch.tensor(t), margin, reduction=reduction), a, b)  # fmt: skip
    check(lambda x, y: F.cosine_embedding_loss(x, y, dg.tensor(-1.0), reduction=reduction),  # (D,) with a 0-d target
          lambda x, y: TF.cosine_embedding_loss(x, y, torch.tensor(-1.0), reduction=reduction), a[0], b[0])  # fmt: skip
    check(lambda x, y: F.cosine_embedding_loss(x, y, dg.tensor(t), reduction=reduction),  # a (1, D) input broadcasts
          lambda x, y: TF.cosine_embedding_loss(x, y, torch.tensor(t), reduction=reduction), a[:1], b)  # fmt: skip
    zero = np.zeros((6, 4))  # the 1e-12 floor: a zero input has cos 0 and a finite gradient
    check(lambda x, y: F.cosine_embedding_loss(x, y, dg.tensor(t), -0.5, reduction=reduction),
          lambda x, y: TF.cosine_embedding_loss(x, y, torch.tensor(t), -0.5, reduction=reduction), zero, b)  # fmt: skip


def test_cosine_embedding_loss_gradcheck_float32_and_errors():
    t = dg.tensor(np.array([1, -1, -1]))
    _gradcheck(
        lambda x, y: F.cosine_embedding_loss(x, y, t, -0.9), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    )
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check(lambda x, y: F.cosine_embedding_loss(x, y, t), lambda x, y: TF.cosine_embedding_loss(x, y, torch.tensor([1, -1, -1])),
          a, b, dtype=np.float32, rtol=1e-5, atol=1e-6)  # fmt: skip
    with pytest.raises(ShapeError, match="1D target expects 2D input tensors"):
        F.cosine_embedding_loss(dg.ones(3), dg.ones(3), dg.ones(3))
    with pytest.raises(ShapeError, match="multi-target not supported"):
        F.cosine_embedding_loss(dg.ones(3, 2), dg.ones(3, 2), dg.ones(3, 2))


# ---- multi-class and multi-label margins --------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_loss_matches_torch(reduction, p):
    x = np.round(rng.standard_normal((6, 4)) * 2) / 2  # ties: terms exactly at the hinge
    t = np.array([0, 3, 1, 1, 2, 0])
    w = rng.random(4) + 0.5
    for margin, weight in ((1.0, None), (0.5, w), (2.0, w)):
        dw, tw = (None, None) if weight is None else (dg.tensor(weight), torch.tensor(weight))
        check(lambda a: F.multi_margin_loss(a, dg.tensor(t), p, margin, dw, reduction=reduction),
              lambda a: TF.multi_margin_loss(a, torch.tensor(t), p, margin, tw, reduction=reduction), x)  # fmt: skip
    with pytest.raises(AutogradError, match="not differentiable with respect to argument 'weight'"):  # as torch
        F.multi_margin_loss(dg.tensor(x), dg.tensor(t), p, weight=dg.tensor(w, requires_grad=True))
    for target in (np.array([2]), np.array(2)):  # 1-D input: a (1,) or a 0-d target decides the 'none' shape
        check(lambda a: F.multi_margin_loss(a, dg.tensor(target), p, reduction=reduction),
              lambda a: TF.multi_margin_loss(a, torch.tensor(target), p, reduction=reduction), x[0])  # fmt: skip
    check(lambda a: F.multi_margin_loss(a, dg.tensor(0), p, reduction=reduction),  # 0-d input: one class
          lambda a: TF.multi_margin_loss(a, torch.tensor(0), p, reduction=reduction), np.array(0.3))  # fmt: skip


def test_multi_margin_loss_gradcheck_float32_and_errors():
    t = dg.tensor(np.array([1, 0, 2]))
    _gradcheck(lambda a: F.multi_margin_loss(a, t, 2, 0.7), rng.standard_normal((3, 3)))
    check(lambda a: F.multi_margin_loss(a, t), lambda a: TF.multi_margin_loss(a, torch.tensor([1, 0, 2])),
          rng.standard_normal((3, 3)), dtype=np.float32, rtol=1e-6)  # fmt: skip
    x = dg.ones(2, 4)
    with pytest.raises(IndexOutOfRangeError, match=r"multi_margin_loss: target 4 is out of range \[0, 4\)"):
        F.multi_margin_loss(x, dg.tensor(np.array([1, 4])))
    with pytest.raises(ShapeError, match=r"expected 2, got target \(3,\) for input \(2, 4\)"):
        F.multi_margin_loss(x, dg.tensor(np.array([1, 2, 3])))
    with pytest.raises(DTypeError, match="multi_margin_loss: target must hold class indices"):
        F.multi_margin_loss(x, dg.tensor(np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="only p == 1 and p == 2 supported, got p=3"):
        F.multi_margin_loss(x, dg.tensor(np.array([1, 2])), p=3)
    with pytest.raises(ShapeError, match=r"expected 4 class weights, got \(3,\)"):
        F.multi_margin_loss(x, dg.tensor(np.array([1, 2])), weight=dg.ones(3))
    with pytest.raises(ShapeError, match=r"non-empty vector or matrix .* got \(2, 0\)"):
        F.multi_margin_loss(dg.ones(2, 0), dg.tensor(np.array([0, 0])))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_margin_loss_matches_torch(reduction):
    x = np.round(rng.standard_normal((4, 5)) * 2) / 2
    t = np.array([[3, 0, -1, 1, 1], [1, 1, 4, -1, 0], [0, 1, 2, 3, 4], [-1, 2, 2, 2, 2]])  # dups, −1 ends the list
    check(lambda a: F.multilabel_margin_loss(a, dg.tensor(t), reduction=reduction),
          lambda a: TF.multilabel_margin_loss(a, torch.tensor(t), reduction=reduction), x)  # fmt: skip
    check(lambda a: F.multilabel_margin_loss(a, dg.tensor(t[0]), reduction=reduction),  # 1-D: a 0-d loss
          lambda a: TF.multilabel_margin_loss(a, torch.tensor(t[0]), reduction=reduction), x[0])  # fmt: skip
    check(lambda a: F.multilabel_margin_loss(a, dg.tensor(t), reduction=reduction),
          lambda a: TF.multilabel_margin_loss(a, torch.tensor(t), reduction=reduction), x, dtype=np.float32,
          rtol=1e-6)  # fmt: skip


def test_multilabel_margin_loss_takes_a_view_as_target():
    t = np.array([[9, 9, 9], [2, 0, -1], [1, -1, 0]])
    check(lambda a: F.multilabel_margin_loss(a, dg.tensor(t)[1:]),
          lambda a: TF.multilabel_margin_loss(a, torch.tensor(t)[1:]), rng.standard_normal((2, 3)))  # fmt: skip


def test_multilabel_margin_loss_gradcheck_and_errors():
    t = dg.tensor(np.array([[2, 0, -1], [1, -1, 0]]))
    _gradcheck(lambda a: F.multilabel_margin_loss(a, t), rng.standard_normal((2, 3)))
    with pytest.raises(IndexOutOfRangeError, match=r"target 9 is out of range \[-1, 4\)"):  # after −1 too, as torch
        F.multilabel_margin_loss(dg.ones(4), dg.tensor(np.array([1, -1, 0, 9])))
    with pytest.raises(IndexOutOfRangeError, match=r"target -2 is out of range"):
        F.multilabel_margin_loss(dg.ones(4), dg.tensor(np.array([1, -2, 0, 1])))
    with pytest.raises(ShapeError, match=r"inconsistent target size \(3,\) for input of size \(2, 4\)"):
        F.multilabel_margin_loss(dg.ones(2, 4), dg.tensor(np.array([1, 2, 3])))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_loss_matches_torch(reduction):
    x, y = rng.standard_normal((4, 5)) * 3, (rng.random((4, 5)) > 0.5).astype(np.float64)
    w = rng.random(5) + 0.5
    check(lambda a, b: F.multilabel_soft_margin_loss(a, b, reduction=reduction),
          lambda a, b: TF.multilabel_soft_margin_loss(a, b, reduction=reduction), x, y)  # fmt: skip
    check(lambda a, b, c: F.multilabel_soft_margin_loss(a, b, c, reduction=reduction),
          lambda a, b, c: TF.multilabel_soft_margin_loss(a, b, c, reduction=reduction), x, y, w)  # fmt: skip
    check(lambda a, b: F.multilabel_soft_margin_loss(a, b, reduction=reduction),
          lambda a, b: TF.multilabel_soft_margin_loss(a, b, reduction=reduction), x[0], y[0])  # fmt: skip
    _gradcheck(lambda a: F.multilabel_soft_margin_loss(a, dg.tensor(y), dg.tensor(w), reduction=reduction), x)
    with pytest.raises(ShapeError, match=r"input \(4, 5\), target \(4, 3\) do not broadcast"):
        F.multilabel_soft_margin_loss(dg.tensor(x), dg.ones(4, 3))


def test_legacy_size_average_and_reduce():
    x, t = rng.standard_normal((3, 4)), np.array([0, 1, 3])
    with pytest.warns(UserWarning, match="reduction='sum'"):
        got = F.multi_margin_loss(dg.tensor(x), dg.tensor(t), size_average=False)
    want = TF.multi_margin_loss(torch.tensor(x), torch.tensor(t), reduction="sum")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
    with pytest.warns(UserWarning, match="reduction='none'"):
        assert nn.HingeEmbeddingLoss(reduce=False).reduction == "none"


# ---- modules: options fuzzed against torch's (repr, state_dict, outputs, gradients) --------------------------
def _arrays(r, *shapes):
    g = np.random.default_rng(r.randint(0, 2**31))
    return [g.standard_normal(s) for s in shapes]


def _red(r):
    return r.choice(REDUCTIONS)


def distance_modules(r):
    shape = tuple(r.randint(1, 4) for _ in range(r.randint(1, 3)))
    a = dict(p=r.choice([2.0, 1.0, 3.0, INF]), eps=r.choice([1e-6, 0.1]), keepdim=r.random() < 0.5)
    module_parity(nn.PairwiseDistance(**a), TN.PairwiseDistance(**a), _arrays(r, shape, shape))
    dim = r.randint(-len(shape), len(shape) - 1)
    a = dict(dim=dim, eps=r.choice([1e-8, 0.5]))
    module_parity(nn.CosineSimilarity(**a), TN.CosineSimilarity(**a), _arrays(r, shape, shape))


def triplet_modules(r):
    shape = (r.randint(1, 5), r.randint(1, 4)) if r.random() < 0.8 else (r.randint(1, 4),)
    a = dict(margin=r.choice([1.0, 0.2, 3.0]), swap=r.random() < 0.5, reduction=_red(r))
    p = r.choice([1.0, 2.0, 3.0])
    module_parity(nn.TripletMarginLoss(p=p, **a), TN.TripletMarginLoss(p=p, **a), _arrays(r, shape, shape, shape))
    module_parity(nn.TripletMarginWithDistanceLoss(**a), TN.TripletMarginWithDistanceLoss(**a),
                  _arrays(r, shape, shape, shape))  # fmt: skip


def embedding_losses(r):
    n, d = r.randint(1, 5), r.randint(1, 4)
    g = np.random.default_rng(r.randint(0, 2**31))
    a = dict(margin=r.choice([0.0, 0.5, -0.3]), reduction=_red(r))
    t = g.choice([-1, 1], n)
    module_parity(nn.CosineEmbeddingLoss(**a), TN.CosineEmbeddingLoss(**a), [*_arrays(r, (n, d), (n, d)), t])
    a["margin"] = r.choice([1.0, 0.5, 2.0])
    x, t = _arrays(r, (n, d))[0], g.choice([-1.0, 1.0], (n, d))
    module_parity(nn.HingeEmbeddingLoss(**a), TN.HingeEmbeddingLoss(**a), [x, t], nograd=(1,))


def margin_losses(r):
    n, c = r.randint(1, 5), r.randint(1, 5)
    g = np.random.default_rng(r.randint(0, 2**31))
    x = g.standard_normal((n, c)) if r.random() < 0.8 else g.standard_normal(c)
    lead = x.shape[:-1]
    w = np.abs(g.standard_normal(c)) + 0.1 if r.random() < 0.5 else None
    a = dict(p=r.choice([1, 2]), margin=r.choice([1.0, 0.5, 2.0]), reduction=_red(r))
    dm = nn.MultiMarginLoss(weight=None if w is None else dg.tensor(w), **a)
    tm = TN.MultiMarginLoss(weight=None if w is None else torch.tensor(w), **a)
    module_parity(dm, tm, [x, g.integers(0, c, lead if lead else (1,))])
    labels = g.integers(-1, c, x.shape)
    module_parity(nn.MultiLabelMarginLoss(reduction=a["reduction"]), TN.MultiLabelMarginLoss(reduction=a["reduction"]),
                  [x, labels])  # fmt: skip
    y = (g.random(x.shape) > 0.5).astype(np.float64)
    dm = nn.MultiLabelSoftMarginLoss(weight=None if w is None else dg.tensor(w), reduction=a["reduction"])
    tm = TN.MultiLabelSoftMarginLoss(weight=None if w is None else torch.tensor(w), reduction=a["reduction"])
    module_parity(dm, tm, [x, y])


FAMILIES = {"distance": distance_modules, "triplet": triplet_modules, "embedding": embedding_losses,
            "margin": margin_losses}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_module_options_match_torch(family):
    for i in range(20):
        r = random.Random(f"{family}-{i}")
        try:
            FAMILIES[family](r)
        except AssertionError as e:
            raise AssertionError(f"{family} draw {i} (random.Random('{family}-{i}')): {e}") from None
