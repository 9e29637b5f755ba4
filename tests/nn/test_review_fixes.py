"""Divergences from torch found by the nn review, each pinned against torch: the lazy norms' `bias`
keyword (an affine scale without a shift), linear's refusal of a 0-D operand, and the "more than one
value" refusals of batch, instance, group and sync batch norm raised as distgraph's ShapeError.
"""

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.errors import DistgraphError, ShapeError

torch = pytest.importorskip("torch")
F, TF = dg.nn.functional, torch.nn.functional


@pytest.mark.parametrize("name", ["LazyBatchNorm1d", "LazyBatchNorm2d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"])
@pytest.mark.parametrize("affine", [True, False])
def test_lazy_norm_bias_false_matches_torch(name, affine):
    """bias=False keeps the weight and drops the shift: the same state_dict, repr and output as torch's."""
    dims = {"1d": 3, "2d": 4, "3d": 5}[name[-2:]]
    x = np.random.default_rng(0).standard_normal((2, 3, *(4,) * (dims - 2)))
    dm, tm = getattr(nn, name)(affine=affine, bias=False), getattr(torch.nn, name)(affine=affine, bias=False)
    if affine:  # a weight that is not all ones, so a forgotten scale would show
        scale = np.array([0.5, 2.0, -1.5])
        dm(dg.tensor(x, dtype=dg.float32))
        tm(torch.tensor(x, dtype=torch.float32))
        dm.double(), tm.double()
        dm.weight.array[...] = scale
        tm.weight.data = torch.tensor(scale)
    dm.double(), tm.double()
    out = dm(dg.tensor(x)).detach().numpy()
    ref = tm(torch.tensor(x)).detach().numpy()
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert repr(dm) == repr(tm)
    assert dm.bias is None
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_lazy_norm_bias_default_keeps_bias():
    dm, tm = nn.LazyBatchNorm2d(), torch.nn.LazyBatchNorm2d()
    dm(dg.zeros(2, 3, 2, 2)), tm(torch.zeros(2, 3, 2, 2))
    assert list(dm.state_dict()) == list(tm.state_dict())
    assert repr(dm) == repr(tm)


@pytest.mark.parametrize(("x_shape", "w_shape"), [((), (3, 4)), ((4,), ())])
def test_linear_refuses_zero_dim_operand(x_shape, w_shape):
    """torch refuses a 0-D operand; distgraph raised a bare IndexError (tuple index out of range)."""
    x, w = np.ones(x_shape), np.ones(w_shape)
    with pytest.raises(RuntimeError, match="at least 1D"):
        TF.linear(torch.tensor(x), torch.tensor(w))
    with pytest.raises(ShapeError, match=r"linear: both arguments to linear need to be at least 1D"):
        F.linear(dg.tensor(x), dg.tensor(w))


def test_linear_module_refuses_scalar_input():
    with pytest.raises(ShapeError, match="at least 1D, but they are 0D and 2D"):
        nn.Linear(3, 4)(dg.tensor(1.0))


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        ("BatchNorm1d", (1, 3)),
        ("BatchNorm2d", (1, 3, 1, 1)),
        ("InstanceNorm1d", (2, 3, 1)),
    ],
)
def test_single_value_norms_raise_distgraph_shape_error(module, shape):
    """Where torch refuses one value per channel (or spatial position), distgraph's error is a ShapeError
    (so `except DistgraphError` catches it), still a ValueError as before."""
    x = np.ones(shape)
    with pytest.raises((ValueError, RuntimeError), match="more than 1"):
        getattr(torch.nn, module)(3)(torch.tensor(x))
    with pytest.raises(ShapeError, match="more than 1") as caught:
        getattr(nn, module)(3)(dg.tensor(x))
    assert isinstance(caught.value, DistgraphError) and isinstance(caught.value, ValueError)


def test_group_norm_single_value_per_group_is_shape_error():
    x = np.ones((1, 3))
    with pytest.raises((ValueError, RuntimeError)):
        TF.group_norm(torch.tensor(x), 3)
    with pytest.raises(ShapeError, match="group_norm: expected more than 1 value per group"):
        F.group_norm(dg.tensor(x), 3)


def test_clip_grad_norm_nonfinite_is_distgraph_error():
    """torch raises RuntimeError; distgraph's error is a NonFiniteError that is still a RuntimeError."""
    from distgraph.errors import NonFiniteError
    from distgraph.nn.utils import clip_grad_norm_

    grad = np.array([np.nan, 1.0, 2.0])
    tp = torch.ones(3, dtype=torch.float64, requires_grad=True)
    tp.grad = torch.tensor(grad)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_([tp], 1.0, error_if_nonfinite=True)
    p = dg.tensor(np.ones(3), requires_grad=True)
    p.grad = dg.tensor(grad)
    with pytest.raises(NonFiniteError, match="non-finite") as caught:
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert isinstance(caught.value, RuntimeError)


def _r(*shape):
    return np.random.default_rng(1).standard_normal(shape)


_BAD_CALLS = {  # name: (distgraph call, torch call), each refused by torch
    "embedding_bag offsets[0] != 0": lambda f, t: f.embedding_bag(t([1, 2]), t(_r(5, 3)), t([1, 2])),
    "embedding_bag 2-D input with offsets": lambda f, t: f.embedding_bag(t([[1, 2]]), t(_r(5, 3)), t([0])),
    "embedding_bag 1-D input without offsets": lambda f, t: f.embedding_bag(t([1, 2]), t(_r(5, 3))),
    "ctc_loss negative length": lambda f, t: f.ctc_loss(t(_r(5, 2, 4)), t([[1, 2], [1, 1]]), t([5, -1]), t([2, 2])),
    "ctc_loss blank out of range": lambda f, t: f.ctc_loss(
        t(_r(5, 2, 4)), t([[1, 2], [1, 1]]), t([5, 5]), t([2, 2]), blank=4
    ),
    "gaussian_nll_loss negative var": lambda f, t: f.gaussian_nll_loss(t(_r(2, 3)), t(_r(2, 3)), t(-np.ones((2, 3)))),
    "gaussian_nll_loss var size": lambda f, t: f.gaussian_nll_loss(t(_r(2, 3)), t(_r(2, 3)), t(np.ones((3, 3)))),
    "multi_margin_loss 2-D weight": lambda f, t: f.multi_margin_loss(t(_r(2, 3)), t([0, 1]), weight=t(np.ones((3, 1)))),
    "multi_margin_loss p=3": lambda f, t: f.multi_margin_loss(t(_r(2, 3)), t([0, 1]), p=3),
    "batch_norm eval without stats": lambda f, t: f.batch_norm(t(_r(2, 3)), None, None, training=False),
    "instance_norm without stats": lambda f, t: f.instance_norm(t(_r(2, 3, 4)), use_input_stats=False),
    "grid_sample mode": lambda f, t: f.grid_sample(t(_r(1, 2, 3, 3)), t(_r(1, 2, 2, 2)), mode="cubic"),
    "affine_grid empty size": lambda f, t: f.affine_grid(t(_r(1, 2, 3)), (1, 2, 0, 3), align_corners=False),
    "max_unpool2d output_size": lambda f, t: f.max_unpool2d(
        t(_r(1, 1, 2, 2)), t(np.zeros((1, 1, 2, 2), np.int64)), 2, output_size=(9, 9)
    ),
    "fractional_max_pool2d without size": lambda f, t: f.fractional_max_pool2d(t(_r(1, 1, 5, 5)), 2),
    "local_response_norm size 0": lambda f, t: f.local_response_norm(t(_r(1, 3, 4)), 0),
    "softshrink negative lambda": lambda f, t: f.softshrink(t(_r(3)), -1.0),
    "rrelu lower > upper": lambda f, t: f.rrelu(t(_r(3)), 0.5, 0.1, training=True),
    "sdpa dropout_p": lambda f, t: f.scaled_dot_product_attention(
        t(_r(2, 3, 4)), t(_r(2, 3, 4)), t(_r(2, 3, 4)), dropout_p=1.5
    ),
    "channel_shuffle groups 0": lambda f, t: f.channel_shuffle(t(_r(1, 4, 2)), 0),
    "dropout p": lambda f, t: f.dropout(t(_r(3)), 1.5),
    "triplet_margin_with_distance_loss margin": lambda f, t: f.triplet_margin_with_distance_loss(
        t(_r(2, 3)), t(_r(2, 3)), t(_r(2, 3)), margin=-1.0
    ),
    "kl_div reduction": lambda f, t: f.kl_div(t(_r(3)), t(_r(3)), reduction="bad"),
    "cross_entropy label_smoothing": lambda f, t: f.cross_entropy(t(_r(3, 4)), t([0, 1, 1]), label_smoothing=1.5),
}


@pytest.mark.parametrize("name", sorted(_BAD_CALLS))
def test_refusals_are_distgraph_errors(name):
    """Where torch refuses a call, distgraph raises a DistgraphError (these were bare ValueErrors); each is
    still a ValueError, the builtin a Python user catches for a bad argument."""
    call = _BAD_CALLS[name]
    with pytest.raises((RuntimeError, ValueError, AssertionError, NotImplementedError)):
        call(TF, lambda a: torch.tensor(np.asarray(a)))
    with pytest.raises(DistgraphError) as caught:
        call(F, lambda a: dg.tensor(np.asarray(a)))
    assert isinstance(caught.value, ValueError)
