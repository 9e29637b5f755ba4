"""feature_alpha_dropout / nn.FeatureAlphaDropout: whole channels dropped to SELU's saturation value and
the rest mapped affinely, keeping mean 0 and variance 1 (statistics over many channels, as torch's own
draw cannot be reproduced); the gradient is the per-channel scale; eval, p=0 and p=1 as torch; errors."""

import math

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import ShapeError

torch = pytest.importorskip("torch")
ALPHA = 1.7580993408473766


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_feature_alpha_dropout_drops_whole_channels_and_keeps_unit_statistics(p):
    dg.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((400, 50, 3, 4))
    a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    xt = dg.tensor(x, requires_grad=True)
    out = F.feature_alpha_dropout(xt, p, training=True)
    got = out.detach().numpy()
    dropped = np.all(np.isclose(got, ALPHA * a * (p - 1)), axis=(2, 3))  # (N, C): one draw per channel
    kept = np.all(np.isclose(got, x * a + ALPHA * a * p), axis=(2, 3))
    assert np.all(dropped ^ kept)
    assert abs(dropped.mean() - p) < 0.01
    assert abs(got.mean()) < 0.02 and abs(got.var() - 1) < 0.03
    out.sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), np.broadcast_to((kept * a)[:, :, None, None], x.shape))
    # the same statistics from torch's own draw
    tout = torch.nn.functional.feature_alpha_dropout(torch.tensor(x), p, training=True).numpy()
    assert abs(tout.mean() - got.mean()) < 0.03 and abs(tout.var() - got.var()) < 0.05


def test_feature_alpha_dropout_eval_p0_p1_and_module():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    for kw in ({"training": False}, {"p": 0.0, "training": True}):
        np.testing.assert_array_equal(F.feature_alpha_dropout(dg.tensor(x), **kw).numpy(), x)
    zero = F.feature_alpha_dropout(dg.tensor(x), 1.0, training=True).numpy()
    np.testing.assert_array_equal(zero, torch.nn.functional.feature_alpha_dropout(torch.tensor(x), 1.0, True).numpy())
    m = nn.FeatureAlphaDropout(0.3)
    assert repr(m) == repr(torch.nn.FeatureAlphaDropout(0.3))
    m.eval()
    np.testing.assert_array_equal(m(dg.tensor(x)).numpy(), x)
    m.train()
    dg.manual_seed(3)
    y = dg.tensor(x.copy())
    out = nn.FeatureAlphaDropout(0.5, inplace=True)(y)
    assert out is y and not np.array_equal(y.numpy(), x)


def test_feature_alpha_dropout_errors():
    with pytest.raises(ShapeError, match="feature_alpha_dropout: .*at least 2 dimensions"):
        F.feature_alpha_dropout(dg.tensor(np.zeros(3)), 0.5, True)
    with pytest.raises(ValueError, match="feature_alpha_dropout: dropout probability has to be between 0 and 1"):
        F.feature_alpha_dropout(dg.tensor(np.zeros((2, 3))), 1.5, True)
    with pytest.raises(ValueError, match="FeatureAlphaDropout: dropout probability"):
        nn.FeatureAlphaDropout(-0.1)
