"""torch spellings a ported script uses that distgraph lacked: `nn.utils.clip_grad_norm` (deprecated, warns)
and `nn.functional.grad` (torch.nn.grad under functional's name)."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn

torch = pytest.importorskip("torch")


def test_clip_grad_norm_without_underscore_clips_in_place_and_warns_as_torch():
    grads = np.random.default_rng(0).standard_normal((2, 5)) * 10
    params = [nn.Parameter(dg.zeros(5, dtype=dg.float64)) for _ in grads]
    tparams = [torch.nn.Parameter(torch.zeros(5, dtype=torch.float64)) for _ in grads]
    for p, t, g in zip(params, tparams, grads):
        p.grad, t.grad = dg.tensor(g), torch.tensor(g)
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        total = nn.utils.clip_grad_norm(params, 1.0)
    with pytest.warns(FutureWarning):
        want = torch.nn.utils.clip_grad_norm(tparams, 1.0)
    assert float(total) == pytest.approx(float(want), rel=1e-12)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_functional_grad_is_nn_grad_and_gives_torchs_conv_gradients():
    assert F.grad is nn.grad
    rng = np.random.default_rng(1)
    x, w, g = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 3, 3))
    kw = {"stride": 2, "padding": 0}
    got = F.grad.conv2d_input(x.shape, dg.tensor(w), dg.tensor(g), **kw)
    want = torch.nn.functional.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(g), **kw)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
