"""A pooling stride given as `[]` or `()` means the kernel size, as torch reads it (TorchScript-style code
passes `stride=[]`); it was refused as a malformed stride."""

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn

torch = pytest.importorskip("torch")

CASES = [  # (functional name, module name, input dims, extra positional args before kernel_size)
    ("max_pool1d", "MaxPool1d", 1, ()),
    ("avg_pool1d", "AvgPool1d", 1, ()),
    ("max_pool2d", "MaxPool2d", 2, ()),
    ("avg_pool2d", "AvgPool2d", 2, ()),
    ("max_pool3d", "MaxPool3d", 3, ()),
    ("avg_pool3d", "AvgPool3d", 3, ()),
    ("lp_pool1d", "LPPool1d", 1, (2.0,)),
    ("lp_pool2d", "LPPool2d", 2, (2.0,)),
]


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
@pytest.mark.parametrize(("fn", "module", "dims", "lead"), CASES, ids=[c[0] for c in CASES])
def test_empty_stride_is_the_kernel_size(fn, module, dims, lead, empty):
    x = np.random.default_rng(0).standard_normal((2, 3) + (6,) * dims)
    want = getattr(torch.nn.functional, fn)(torch.tensor(x), *lead, 2, stride=empty)
    xd = dg.tensor(x, requires_grad=True)
    got = getattr(F, fn)(xd, *lead, 2, stride=empty)
    assert tuple(got.shape) == tuple(want.shape) == (2, 3) + (3,) * dims
    np.testing.assert_allclose(got.detach().numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    got.sum().backward()
    xt = torch.tensor(x, requires_grad=True)
    getattr(torch.nn.functional, fn)(xt, *lead, 2, stride=empty).sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    layer = getattr(nn, module)(*lead, 2, stride=empty)
    np.testing.assert_allclose(layer(dg.tensor(x)).numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


def test_a_malformed_stride_is_still_refused():
    with pytest.raises(ValueError, match="max_pool2d: stride"):
        F.max_pool2d(dg.zeros(1, 1, 4, 4), 2, stride=[1, 2, 3])
