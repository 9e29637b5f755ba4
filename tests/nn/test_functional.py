"""Losses and functional forms against torch in float64 (values and input gradients)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.errors import IndexOutOfRangeError, ShapeError
from tests.parity import check

torch = pytest.importorskip("torch")
TF = torch.nn.functional
rng = np.random.default_rng(0)
logits = rng.standard_normal((6, 5))
target = np.array([0, 4, 2, 2, -100, 1])
weight = rng.random(5) + 0.5


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_indices(reduction, label_smoothing, use_weight):
    w = dg.tensor(weight) if use_weight else None
    wt = torch.tensor(weight) if use_weight else None
    check(
        lambda x: F.cross_entropy(x, dg.tensor(target), w, reduction=reduction, label_smoothing=label_smoothing),
        lambda x: TF.cross_entropy(x, torch.tensor(target), wt, reduction=reduction, label_smoothing=label_smoothing),
        logits,
    )


def test_cross_entropy_spatial_and_probabilities():
    x = rng.standard_normal((2, 4, 3, 3))
    t = rng.integers(0, 4, (2, 3, 3))
    check(lambda a: F.cross_entropy(a, dg.tensor(t)), lambda a: TF.cross_entropy(a, torch.tensor(t)), x)
    probs = rng.dirichlet(np.ones(5), 6)
    check(
        lambda a, p: F.cross_entropy(a, p, label_smoothing=0.1),
        lambda a, p: TF.cross_entropy(a, p, label_smoothing=0.1),
        logits,
        probs,
    )


def test_cross_entropy_double_backward_matches_torch():
    x = dg.tensor(logits, requires_grad=True)
    xt = torch.tensor(logits, requires_grad=True)
    t = target.copy()
    t[4] = 3
    (g,) = dg.autograd.grad(F.cross_entropy(x, dg.tensor(t)), [x], create_graph=True)
    (gt,) = torch.autograd.grad(TF.cross_entropy(xt, torch.tensor(t)), [xt], create_graph=True)
    (g * g).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_cross_entropy_bad_target_errors():
    with pytest.raises(IndexOutOfRangeError, match="cross_entropy"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.array([0, 1, 2, 3, 4, 5])))
    with pytest.raises(ShapeError, match=r"target shape \(3,\)"):
        F.cross_entropy(dg.tensor(logits), dg.tensor(np.array([0, 1, 2])))


a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
p01 = rng.uniform(0.05, 0.95, (4, 3))
y01 = (rng.random((4, 3)) > 0.5).astype(np.float64)
LOSSES = [
    ("mse", lambda x, y: F.mse_loss(x, y), lambda x, y: TF.mse_loss(x, y), (a, b)),
    ("l1", lambda x, y: F.l1_loss(x, y, reduction="sum"), lambda x, y: TF.l1_loss(x, y, reduction="sum"), (a, b)),
    (
        "smooth_l1",
        lambda x, y: F.smooth_l1_loss(x, y, beta=0.5),
        lambda x, y: TF.smooth_l1_loss(x, y, beta=0.5),
        (a, b),
    ),
    ("bce", lambda x, y: F.binary_cross_entropy(x, y), lambda x, y: TF.binary_cross_entropy(x, y), (p01, y01)),
    (
        "bce_logits",
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=dg.tensor(np.array([1.0, 2.0, 0.5]))),
        lambda x, y: TF.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([1.0, 2.0, 0.5])),
        (a, y01),
    ),
    (
        "kl_div",
        lambda x, y: F.kl_div(F.log_softmax(x, 1), F.softmax(y, 1), reduction="batchmean"),
        lambda x, y: TF.kl_div(TF.log_softmax(x, 1), TF.softmax(y, 1), reduction="batchmean"),
        (a, b),
    ),
    (
        "nll",
        lambda x: F.nll_loss(F.log_softmax(x, 1), dg.tensor(np.array([0, 2, 1, 2]))),
        lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.tensor([0, 2, 1, 2])),
        (a,),
    ),
    (
        "layer_norm",
        lambda x, w: F.layer_norm(x, (3,), w),
        lambda x, w: TF.layer_norm(x, (3,), w),
        (a, rng.standard_normal(3)),
    ),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), (a,)),
    ("normalize", lambda x: F.normalize(x, dim=1), lambda x: TF.normalize(x, dim=1), (a,)),
]


@pytest.mark.parametrize("name,fd,ft,args", LOSSES, ids=[c[0] for c in LOSSES])
def test_functional_matches_torch(name, fd, ft, args):
    check(fd, ft, *args)


def test_loss_shape_mismatch_names_the_op():
    with pytest.raises(ShapeError, match=r"mse_loss: input shape \(4, 3\) and target shape \(3,\)"):
        F.mse_loss(dg.tensor(a), dg.tensor(b[0]))
