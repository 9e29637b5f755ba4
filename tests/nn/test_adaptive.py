"""nn.AdaptiveLogSoftmaxWithLoss against torch in float64: forward (output, loss) and gradients of the
input and every parameter for batches touching all clusters, only the shortlist, only one cluster, one
row, and 0-d targets; log_prob (a distribution) and predict; the argument errors."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import IndexOutOfRangeError, ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def _pair(**kw):
    kw = {"in_features": 16, "n_classes": 20, "cutoffs": [4, 9, 15], **kw}
    dg.manual_seed(0)
    return nn.AdaptiveLogSoftmaxWithLoss(**kw), torch.nn.AdaptiveLogSoftmaxWithLoss(**kw)


@pytest.mark.parametrize(
    "target",
    [np.array([0, 5, 19, 3, 10, 14, 9, 4]), np.array([1, 2, 0, 3]), np.array([16, 19, 15]), np.array([12])],
)
@pytest.mark.parametrize("kw", [{}, {"div_value": 2.0, "head_bias": True}])
def test_adaptive_log_softmax_forward_and_gradients_match_torch(target, kw):
    dm, tm = _pair(**kw)
    module_parity(dm, tm, [rng.standard_normal((len(target), 16)), target])


def test_adaptive_log_softmax_unbatched_log_prob_and_predict():
    dm, tm = _pair(cutoffs=[2, 5], n_classes=8, in_features=6, head_bias=True)
    module_parity(dm, tm, [rng.standard_normal(6), np.array(6)])
    x = rng.standard_normal((40, 6)) * 3
    got = dm.log_prob(dg.tensor(x))
    want = tm.log_prob(torch.tensor(x))
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.exp(got.detach().numpy()).sum(1), 1.0, rtol=1e-12)
    pred = dm.predict(dg.tensor(x))
    np.testing.assert_array_equal(pred.numpy(), tm.predict(torch.tensor(x)).numpy())
    assert pred.dtype == dg.int64 and (pred.numpy() >= 2).any() and (pred.numpy() < 2).any()


def test_adaptive_log_softmax_errors():
    with pytest.raises(ValueError, match="cutoffs should be a sequence of length larger than 0"):
        nn.AdaptiveLogSoftmaxWithLoss(4, 10, [])
    for bad in ([5, 3], [0, 3], [3, 10], [3, 3]):
        with pytest.raises(ValueError, match="unique, positive integers"):
            nn.AdaptiveLogSoftmaxWithLoss(4, 10, bad)
    m = nn.AdaptiveLogSoftmaxWithLoss(4, 10, [3])
    x = dg.tensor(rng.standard_normal((2, 4)))
    with pytest.raises(IndexOutOfRangeError, match="target values should be in \\[0, 9\\]"):
        m(x, dg.tensor(np.array([1, 10])))
    with pytest.raises(ShapeError, match="same size in the batch dimension"):
        m(x, dg.tensor(np.array([1, 2, 3])))
    with pytest.raises(ShapeError, match="0-D or 1-D target expected"):
        m(x, dg.tensor(np.array([[1, 2]])))


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 4, 3)])
def test_linear_weight_gradient_with_an_empty_dim(shape):
    """Regression: the weight gradient reshaped with -1, which numpy cannot infer when in or out is 0
    (a tail cluster of AdaptiveLogSoftmaxWithLoss whose hidden size rounds to 0)."""
    n, i, o = shape
    x, w = rng.standard_normal((n, i)), rng.standard_normal((o, i))
    check(lambda x, w: dg.nn.functional.linear(x, w), lambda x, w: torch.nn.functional.linear(x, w), x, w)
