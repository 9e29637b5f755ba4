"""The fused cross-entropy op (ops/loss.py) at its edges, against torch float64: a batch whose every
target is ignored has a NaN mean loss but a zero gradient (padding-only batches must not poison
the weights), in the fast backward, the composed (create_graph) one and double backward."""

import numpy as np
import pytest

import distgraph as dg
from tests.parity import check

torch = pytest.importorskip("torch")
F = {dg: dg.nn.functional, torch: torch.nn.functional}

LOGITS = np.random.default_rng(0).standard_normal((3, 4))
TARGET = np.array([1, 1, 1])


@pytest.mark.parametrize(
    "kw",
    [{}, {"label_smoothing": 0.2}, {"weight": np.array([0.5, 2.0, 1.0, 3.0])}, {"reduction": "sum"}],
    ids=["plain", "smoothing", "weights", "sum"],
)
def test_cross_entropy_with_every_target_ignored_has_zero_gradient(kw):
    def fn(m, x, t):
        extra = {k: (m.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        return F[m].cross_entropy(x, t, ignore_index=1, **extra)

    check(lambda x, t: fn(dg, x, t), lambda x, t: fn(torch, x, t), LOGITS, TARGET)


def test_cross_entropy_with_every_target_ignored_double_backward():
    x = dg.tensor(LOGITS, requires_grad=True)
    xt = torch.tensor(LOGITS, requires_grad=True)
    (g,) = dg.autograd.grad(F[dg].cross_entropy(x, dg.tensor(TARGET), ignore_index=1), x, create_graph=True)
    (gt,) = torch.autograd.grad(F[torch].cross_entropy(xt, torch.tensor(TARGET), ignore_index=1), xt, create_graph=True)
    np.testing.assert_array_equal(g.detach().numpy(), gt.detach().numpy())
    assert not np.any(g.detach().numpy())


@pytest.mark.parametrize(
    "kw", [{}, {"weight": np.array([0.5, 2.0, 1.0, 3.0])}, {"reduction": "sum"}], ids=["plain", "weights", "sum"]
)
def test_nll_loss_with_every_target_ignored_has_zero_gradient(kw):
    """nll_loss's mean divided by a zero weight sum: its gathered logit (index 0) got 0·∞ = NaN."""

    def fn(m, x, t):
        extra = {k: (m.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        return F[m].nll_loss(x, t, ignore_index=1, **extra)

    check(lambda x, t: fn(dg, x, t), lambda x, t: fn(torch, x, t), LOGITS, TARGET)
