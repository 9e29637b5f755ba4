"""Margin losses under torch.nn.functional's names: hinge embedding, multi-class and multi-label margins.

Each is a composition of registered ops following ATen's loops: a hinge is `relu` where ATen adds a
term only when it is strictly positive (so the kink has ATen's zero gradient) and `clamp(min=0)` where
ATen calls clamp_min (gradient 1 at the kink). Integer class targets are checked on the host first,
as torch checks them, so a bad label says which op and which value.
"""

import warnings

from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError, DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.nn.functional.loss import reduce_loss
from distgraph.ops import activation as act
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing
from distgraph.ops import reduction as red
from distgraph.ops.autocast import autocast_op
from distgraph.ops.creation import arange


def legacy_reduction(size_average, reduce, reduction):
    """torch's deprecated size_average/reduce pair mapped onto `reduction`, with torch's warning."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    ret = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{ret}' instead.", stacklevel=3
    )
    return ret


@autocast_op("hinge_embedding_loss")
def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    """x where target ≠ −1, plus max(0, margin − x) where target ≠ 1 (so both for other labels); broadcasts."""
    op = "hinge_embedding_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    zero = ew.const(0, input)
    try:
        hinge = ew.where(cmp.ne(target, 1), ew.clamp(ew.rsub(input, margin), min=0), zero)
        kept = ew.where(cmp.ne(target, -1), input, zero)
    except ValueError:
        raise ShapeError(
            f"{op}: input {tuple(input.shape)} and target {tuple(target.shape)} do not broadcast"
        ) from None
    return reduce_loss(ew.add(hinge, kept), reduction, op)


def _class_input(input, op):
    """(N, C) view of torch's (C) / (N, C) / 0-d class scores; refuses empty and other ranks, as torch."""
    nd = input.ndim
    if not ((nd == 2 and input.shape[1] != 0) or (nd == 1 and input.shape[0] != 0) or nd == 0):
        raise ShapeError(
            f"{op}: expected non-empty vector or matrix with optional 0-dim batch size, got {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise DTypeError(f"{op}: input must be a floating-point tensor, got {input.dtype.name}")
    nframe, dim = (input.shape[0] if nd == 2 else 1), (input.shape[-1] if nd else 1)
    return input.reshape(nframe, dim), nframe, dim


def _check_labels(target, op, lo, dim):
    if target.array.dtype.kind not in "iu":
        raise DTypeError(f"{op}: target must hold class indices (an integer dtype), got {target.dtype.name}")
    if target.numel():
        t_lo, t_hi = int(target.array.min()), int(target.array.max())
        if t_lo < lo or t_hi >= dim:
            bad = t_lo if t_lo < lo else t_hi
            raise IndexOutOfRangeError(f"{op}: target {bad} is out of range [{lo}, {dim}) for {dim} classes")


def multi_margin_loss(
    input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"
):  # fmt: skip
    """Σ_{i ≠ y} w_y · max(0, margin − x_y + x_i)^p / C per sample, y the target class."""
    op = "multi_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    if p not in (1, 2):
        raise InputRangeError(f"{op}: only p == 1 and p == 2 supported, got p={p}")
    if weight is not None and weight.ndim != 1:
        raise ShapeError(f"{op}: weight must be one-dimensional, got shape {tuple(weight.shape)}")
    x, nframe, dim = _class_input(input, op)
    if target.ndim > 1 or target.numel() != nframe:
        raise ShapeError(
            f"{op}: target should be 1-D with one class index per sample: expected {nframe}, got target "
            f"{tuple(target.shape)} for input {tuple(input.shape)}"
        )
    if weight is not None and weight.numel() != dim:
        raise ShapeError(f"{op}: inconsistent weight size, expected {dim} class weights, got {tuple(weight.shape)}")
    if weight is not None and weight.requires_grad and is_grad_enabled():
        raise AutogradError(f"{op} is not differentiable with respect to argument 'weight' (as torch): it cannot "
                            "require grad")  # fmt: skip
    _check_labels(target, op, 0, dim)
    t = target.reshape(nframe, 1)
    z = ew.relu(ew.add(ew.sub(x, indexing.gather(x, 1, t)), margin))  # (N, C); ATen adds only z > 0
    h = z if p == 1 else ew.square(z)
    if weight is not None:
        h = ew.mul(h, indexing.index_select(weight, 0, t.reshape(nframe)).reshape(nframe, 1))
    others = cmp.ne(arange(dim, device=input.device), t)
    loss = ew.div(red.sum(ew.where(others, h, ew.const(0, h)), dim=1), dim)
    if reduction == "none":
        return loss.reshape(nframe) if target.ndim else loss.reshape(())
    return reduce_loss(loss, reduction, op)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Σ_j Σ_{i ∉ targets} max(0, 1 − (x_{y_j} − x_i)) / C per sample; the target lists class indices and
    ends at the first −1 (the entries after it are ignored, but must lie in [−1, C) as torch checks)."""
    op = "multilabel_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    x, nframe, dim = _class_input(input, op)
    ok = target.ndim <= 1 and target.numel() == dim if input.ndim <= 1 else tuple(target.shape) == tuple(input.shape)
    if not ok:
        raise ShapeError(f"{op}: inconsistent target size {tuple(target.shape)} for input of size {tuple(input.shape)}")
    _check_labels(target, op, -1, dim)
    xp = input.device.xp
    t = target.array.reshape(nframe, dim)
    active = xp.cumprod(t >= 0, axis=1).astype(bool)  # (N, J): the labels before the first −1
    safe = xp.where(active, t, 0)
    hit = (safe[:, :, None] == xp.arange(dim)) & active[:, :, None]  # (N, J, C)
    pairs = active[:, :, None] & ~hit.any(axis=1)[:, None, :]  # (N, J, I): label j against non-label i
    picked = indexing.gather(x, 1, Tensor(safe, device=input.device))  # (N, J)
    z = ew.relu(ew.add(ew.rsub(picked.unsqueeze(2), 1), x.unsqueeze(1)))  # ATen adds only z > 0
    mask = Tensor(pairs, device=input.device)
    loss = ew.div(red.sum(ew.where(mask, z, ew.const(0, z)), dim=(1, 2)), dim)
    if reduction == "none":
        return loss.reshape(nframe) if target.ndim == 2 else loss.reshape(())
    return reduce_loss(loss, reduction, op)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Mean over classes (the last dim) of the binary logistic loss of each class, optionally weighted."""
    op = "multilabel_soft_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    if input.ndim == 0:
        raise ShapeError(f"{op}: input needs a class dimension (its last), got a 0-d tensor")
    try:
        loss = ew.neg(
            ew.add(ew.mul(target, act.logsigmoid(input)), ew.mul(ew.rsub(target, 1), act.logsigmoid(ew.neg(input))))
        )
        if weight is not None:
            loss = ew.mul(loss, weight)
    except ValueError:
        shapes = f"input {tuple(input.shape)}, target {tuple(target.shape)}" + (
            f", weight {tuple(weight.shape)}" if weight is not None else ""
        )
        raise ShapeError(f"{op}: {shapes} do not broadcast") from None
    loss = ew.div(red.sum(loss, dim=input.ndim - 1), input.shape[-1])
    return reduce_loss(loss, reduction, op)
