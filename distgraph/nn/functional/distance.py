"""Distances between embeddings and the losses built on them, with torch.nn.functional's names.

pairwise_distance is torch's ‖x1 − x2 + eps‖_p over the last dim; the triplet losses and the cosine
embedding loss follow ATen's formulas step by step (its 1e-12 floor, its clamp_min, its minimum for
the swap), so values and gradients agree with torch's, ties and kinks included.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, InputRangeError, ShapeError
from distgraph.nn.functional.extra import legacy_reduction
from distgraph.nn.functional.loss import reduce_loss
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.autocast import autocast_op

_COSINE_EPS = 1e-12  # ATen's EPSILON added to each squared magnitude in cosine_embedding_loss


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """‖x1 − x2 + eps‖_p along the last dim of the broadcast inputs (integer inputs give a float distance)."""
    for name, t in (("x1", x1), ("x2", x2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"pairwise_distance: {name} must be a Tensor, got {type(t).__name__}")
    try:
        diff = ew.add(ew.sub(x1, x2), eps)
    except ValueError:
        raise ShapeError(f"pairwise_distance: x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} do not broadcast") from None
    return red.norm(diff, p=p, dim=max(x1.ndim, x2.ndim) - 1, keepdim=keepdim)


def _check_triplet(anchor, positive, negative, margin, op):
    if margin <= 0:
        raise InputRangeError(f"{op}: margin must be greater than 0, got {margin}")
    dims = anchor.ndim, positive.ndim, negative.ndim
    if len(set(dims)) != 1:
        raise ShapeError(
            f"{op}: the anchor, positive, and negative tensors are expected to have the same number of "
            f"dimensions, but got: anchor {dims[0]}D, positive {dims[1]}D, and negative {dims[2]}D inputs"
        )


def _triplet(dist_pos, dist_neg, dist_swap, margin, reduction, op):
    """clamp_min(margin + d(a, p) − d(a, n), 0), d(a, n) replaced by min(d(a, n), d(p, n)) when swapping."""
    if dist_swap is not None:
        dist_neg = ew.minimum(dist_neg, dist_swap)
    return reduce_loss(ew.clamp(ew.sub(ew.add(dist_pos, margin), dist_neg), min=0), reduction, op)


def triplet_margin_loss(
    anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None, reduce=None, reduction="mean"
):
    """max(d(a, p) − d(a, n) + margin, 0) with d the pairwise p-norm distance."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_triplet(anchor, positive, negative, margin, "triplet_margin_loss")
    dist = lambda a, b: pairwise_distance(a, b, p, eps)  # noqa: E731
    swap_d = dist(positive, negative) if swap else None
    return _triplet(dist(anchor, positive), dist(anchor, negative), swap_d, margin, reduction, "triplet_margin_loss")


def triplet_margin_with_distance_loss(
    anchor, positive, negative, *, distance_function=None, margin=1.0, swap=False, reduction="mean"
):
    """The triplet loss with any distance (default: pairwise_distance); torch checks the reduction first."""
    op = "triplet_margin_with_distance_loss"
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"{op}: {reduction!r} is not a valid value for reduction")
    _check_triplet(anchor, positive, negative, margin, op)
    dist = distance_function if distance_function is not None else pairwise_distance
    swap_d = dist(positive, negative) if swap else None
    return _triplet(dist(anchor, positive), dist(anchor, negative), swap_d, margin, reduction, op)


@autocast_op("cosine_embedding_loss")
def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """1 − cos(x1, x2) where target is 1, max(0, cos(x1, x2) − margin) where it is −1, else 0; the inputs are
    (N, D) with a (N,) target, or (D,) with a 0-D one."""
    op = "cosine_embedding_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    tdim = target.ndim
    if tdim > 1:
        raise ShapeError(
            f"{op}: 0D or 1D target tensor expected, multi-target not supported, got {tuple(target.shape)}"
        )
    if not input1.ndim == input2.ndim == tdim + 1:
        raise ShapeError(
            f"{op}: a {tdim}D target expects {tdim + 1}D input tensors, but found inputs with sizes "
            f"{tuple(input1.shape)} and {tuple(input2.shape)}"
        )
    try:
        prod = red.sum(ew.mul(input1, input2), dim=tdim)
    except ValueError:
        raise ShapeError(f"{op}: inputs {tuple(input1.shape)} and {tuple(input2.shape)} do not broadcast") from None
    mag1 = ew.add(red.sum(ew.mul(input1, input1), dim=tdim), _COSINE_EPS)
    mag2 = ew.add(red.sum(ew.mul(input2, input2), dim=tdim), _COSINE_EPS)
    cos = ew.div(prod, ew.sqrt(ew.mul(mag1, mag2)))
    zero = ew.const(0, cos)
    pos = ew.where(cmp.eq(target, 1), ew.rsub(cos, 1), zero)
    neg = ew.where(cmp.eq(target, -1), ew.clamp(ew.sub(cos, margin), min=0), zero)
    return reduce_loss(ew.add(pos, neg), reduction, op)
