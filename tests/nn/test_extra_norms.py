"""instance_norm / InstanceNorm1d-3d, BatchNorm3d and local_response_norm / LocalResponseNorm against torch: float64 values
and gradients of input and parameters, running statistics over passes, train vs eval, and the errors."""

import random

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.errors import ShapeError
from tests.nn.test_module_fuzz import module_parity
from tests.parity import check

torch = pytest.importorskip("torch")
TF, TN = torch.nn.functional, torch.nn
rng = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 2, 3, 4), (2, 2, 2, 3, 2)])
def test_instance_norm_matches_torch(shape):
    c = shape[1]
    x, w, b = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c)
    check(F.instance_norm, TF.instance_norm, x)
    check(lambda a, ww, bb: F.instance_norm(a, weight=ww, bias=bb, eps=0.1),
          lambda a, ww, bb: TF.instance_norm(a, weight=ww, bias=bb, eps=0.1), x, w, b)  # fmt: skip
    check(F.instance_norm, TF.instance_norm, x, dtype=np.float32, rtol=1e-5, atol=1e-5)
    assert dg.autograd.gradcheck(lambda a, ww: F.instance_norm(a, weight=ww), [dg.tensor(x, requires_grad=True),
                                 dg.tensor(w, requires_grad=True)])  # fmt: skip


def test_instance_norm_running_statistics_and_eval():
    x = rng.standard_normal((3, 2, 4)) * 3 + 1
    rm, rv = rng.standard_normal(2), rng.random(2) + 0.5
    dm, dv, tm, tv = dg.tensor(rm), dg.tensor(rv), torch.tensor(rm), torch.tensor(rv)
    check(lambda a: F.instance_norm(a, dm, dv, momentum=0.3), lambda a: TF.instance_norm(a, tm, tv, momentum=0.3), x)
    np.testing.assert_allclose(dm.numpy(), tm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dv.numpy(), tv.numpy(), rtol=1e-12)
    check(lambda a: F.instance_norm(a, dm, dv, use_input_stats=False),
          lambda a: TF.instance_norm(a, tm, tv, use_input_stats=False), x)  # fmt: skip


def test_instance_norm_errors():
    with pytest.raises(ValueError, match=r"more than 1 spatial element when training, got input size \(2, 3, 1\)"):
        F.instance_norm(dg.ones(2, 3, 1))
    with pytest.raises(ShapeError, match=r"weight shape \(2,\) does not match the 3 channels"):
        F.instance_norm(dg.ones(2, 3, 4), weight=dg.ones(2))
    with pytest.raises(ShapeError, match=r"InstanceNorm2d: expected 3D or 4D input \(got 2D input\)"):
        nn.InstanceNorm2d(3)(dg.ones(3, 4))
    with pytest.raises(ShapeError, match=r"to match num_features \(3\), but got: 2"):
        nn.InstanceNorm1d(3, affine=True)(dg.ones(2, 2, 4))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(3)(dg.ones(2, 2, 4))


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 4, 3), (1, 5, 2, 3), (2, 3, 2, 2, 2)])
def test_local_response_norm_matches_torch(size, shape):
    x = rng.standard_normal(shape) * 3
    check(lambda a: F.local_response_norm(a, size), lambda a: TF.local_response_norm(a, size), x)
    check(lambda a: F.local_response_norm(a, size, 0.5, 0.6, 2.0),
          lambda a: TF.local_response_norm(a, size, 0.5, 0.6, 2.0), x)  # fmt: skip
    check(lambda a: F.local_response_norm(a, size, 0.5), lambda a: TF.local_response_norm(a, size, 0.5), x,
          dtype=np.float32, rtol=1e-5, atol=1e-6)  # fmt: skip


def test_local_response_norm_gradcheck_and_errors():
    x = dg.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    assert dg.autograd.gradcheck(lambda a: F.local_response_norm(a, 3, alpha=0.5), [x])
    with pytest.raises(ShapeError, match=r"local_response_norm: expected 3D or higher .* got shape \(2, 4\)"):
        F.local_response_norm(dg.ones(2, 4), 2)
    empty = dg.ones(0, 3, 2)
    assert F.local_response_norm(empty, 2) is empty


def instance_norm_case(r, dims):
    c = r.randint(1, 4)
    a = dict(eps=r.choice([1e-5, 0.1]), momentum=r.choice([0.1, 0.5, None]), affine=r.random() < 0.6,
             track_running_stats=r.random() < 0.6)  # fmt: skip
    spatial = tuple(r.randint(1, 3) for _ in range(dims - 1)) + (r.randint(2, 4),)
    shape = ((r.randint(1, 3),) if r.random() < 0.8 else ()) + (c, *spatial)
    dm, tm = getattr(nn, f"InstanceNorm{dims}d")(c, **a), getattr(TN, f"InstanceNorm{dims}d")(c, **a)
    g = np.random.default_rng(r.randint(0, 2**31))
    if a["track_running_stats"] and r.random() < 0.5:
        dm.running_mean.copy_(dg.tensor(g.standard_normal(c)))
        dm.running_var.copy_(dg.tensor(g.random(c) + 0.5))
    for p in dm.parameters():
        p.detach().copy_(dg.tensor(g.standard_normal(p.shape)))
    module_parity(dm, tm, [g.standard_normal(shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


def lrn_case(r):
    a = dict(size=r.randint(1, 5), alpha=r.choice([1e-4, 0.5]), beta=r.choice([0.75, 0.3]), k=r.choice([1.0, 2.0]))
    shape = (r.randint(1, 3), r.randint(1, 6)) + tuple(r.randint(1, 3) for _ in range(r.randint(1, 3)))
    module_parity(
        nn.LocalResponseNorm(**a), TN.LocalResponseNorm(**a), [np.random.default_rng(0).standard_normal(shape)]
    )


def batch_norm3d_case(r):
    c = r.randint(1, 3)
    a = dict(eps=r.choice([1e-5, 0.1]), momentum=r.choice([0.1, None]), affine=r.random() < 0.7,
             track_running_stats=r.random() < 0.7)  # fmt: skip
    shape = (r.randint(1, 3), c, r.randint(1, 3), r.randint(1, 2), r.randint(2, 3))
    g = np.random.default_rng(r.randint(0, 2**31))
    dm, tm = nn.BatchNorm3d(c, **a), TN.BatchNorm3d(c, **a)
    for p in dm.parameters():
        p.detach().copy_(dg.tensor(g.standard_normal(p.shape)))
    module_parity(dm, tm, [g.standard_normal(shape) * 2 + 1], train=r.random() < 0.7, passes=r.randint(1, 3))


FAMILIES = {"BatchNorm3d": batch_norm3d_case, **{f"InstanceNorm{d}d": (lambda r, d=d: instance_norm_case(r, d)) for d in (1, 2, 3)},
            "LocalResponseNorm": lrn_case}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_module_options_match_torch(family):
    for i in range(20):
        r = random.Random(f"{family}-{i}")
        try:
            FAMILIES[family](r)
        except AssertionError as e:
            raise AssertionError(f"{family} draw {i} (random.Random('{family}-{i}')): {e}") from None


def test_batch_norm3d_refuses_other_ranks():
    with pytest.raises(ShapeError, match=r"BatchNorm3d\(2\): expected 5-D input with 2 channels"):
        nn.BatchNorm3d(2)(dg.ones(2, 2, 3, 3))
