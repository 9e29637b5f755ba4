"""Loss functions under torch.nn.functional's names, with torch's reductions and argument order.

Cross-entropy over class indices is one fused op (`ops.loss`); the rest are short compositions of
registered ops, so they differentiate to any order.
"""

import math
import warnings

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, InputRangeError, ShapeError
from distgraph.nn.functional.activation import log_softmax
from distgraph.ops import activation as act
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing
from distgraph.ops import reduction as red
from distgraph.ops.autocast import autocast_op
from distgraph.ops.loss import check_class_weight, cross_entropy_indices, weighted_mean
from distgraph.ops.math_extra import clamp_min
from distgraph.ops.promotion import cast
from distgraph.ops.shape import broadcast_tensors


def reduce_loss(loss, reduction, op):
    """The per-element `loss` reduced as `reduction` asks (every loss of nn.functional ends here)."""
    if reduction == "mean":
        return red.mean(loss)
    if reduction == "sum":
        return red.sum(loss)
    if reduction == "none":
        return loss
    raise ConfigError(f"{op}: {reduction!r} is not a valid value for reduction (it must be 'mean', 'sum' or 'none')")


def _legacy(size_average, reduce, reduction):
    """torch's deprecated size_average / reduce folded into `reduction`, with torch's warning (callers test
    that one of the two is given first, so the common call pays for no import)."""
    from distgraph.nn.functional.extra import legacy_reduction  # extra imports this module

    return legacy_reduction(size_average, reduce, reduction)


def _check_same_shape(input, target, op):
    if tuple(input.shape) != tuple(target.shape):
        raise ShapeError(f"{op}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ")


def _check_broadcast(input, target, op):
    shapes = tuple(input.shape), tuple(target.shape)
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ShapeError(f"{op}: input shape {shapes[0]} and target shape {shapes[1]} do not broadcast") from None


def _broadcast(input, target, op):
    """torch's regression losses take a target of another shape with a warning and broadcast the two
    (a common bug, hence the warning), before the loss: so a 0-d target promotes the dtype as a
    dimensioned one does. Shapes that do not broadcast raise, naming the loss."""
    shapes = tuple(input.shape), tuple(target.shape)
    if shapes[0] == shapes[1]:
        return input, target
    _check_broadcast(input, target, op)
    warnings.warn(
        f"Using a target size ({shapes[1]}) that is different to the input size ({shapes[0]}). This will likely "
        "lead to incorrect results due to broadcasting. Please ensure they have the same size.",
        UserWarning,
        stacklevel=3,
    )
    return broadcast_tensors(input, target)


@autocast_op("cross_entropy")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):  # fmt: skip
    """Logits (N, C[, d...]) against class indices (N[, d...]) or class probabilities (same shape as input)."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise InputRangeError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if target.array.dtype.kind in "iu":
        return cross_entropy_indices(input, target, weight, ignore_index, label_smoothing, reduction)
    if tuple(input.shape) != tuple(target.shape):
        indices = (input.shape[0], *input.shape[2:]) if input.ndim > 1 else ()
        hint = (
            f"; class indices of shape {tuple(target.shape)} must be an integer dtype, got {target.array.dtype}"
            if tuple(target.shape) == indices
            else ""
        )
        raise ShapeError(
            f"cross_entropy: a {target.array.dtype} target is read as class probabilities, which must have the "
            f"input's shape {tuple(input.shape)}, got {tuple(target.shape)}{hint}"
        )
    cls_dim = 1 if input.ndim > 1 else 0
    c = input.shape[cls_dim]
    check_class_weight(weight, c, "cross_entropy")
    logp = log_softmax(input, dim=cls_dim)
    if label_smoothing:
        target = ew.add(ew.mul(target, 1 - label_smoothing), label_smoothing / c)
    prod = ew.mul(logp, target)
    if weight is not None:
        shape = [1] * input.ndim
        shape[cls_dim] = c
        prod = ew.mul(prod, weight.reshape(*shape))
    loss = ew.neg(red.sum(prod, dim=cls_dim))
    if reduction == "mean":  # torch: the mean over batch (and spatial) elements, whatever the weights
        return ew.div(red.sum(loss), max(loss.numel(), 1))
    return reduce_loss(loss, reduction, "cross_entropy")


@autocast_op("nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """−input[n, target[n]] (log-probabilities in, class indices as target), weighted; 'mean' divides by Σ weights."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    if input.ndim < 1:
        raise ShapeError(f"nll_loss: input must have a class dimension, got shape {tuple(input.shape)}")
    cls_dim = 1 if input.ndim > 1 else 0
    expected = (input.shape[0], *input.shape[2:]) if input.ndim > 1 else ()
    if tuple(target.shape) != expected:
        raise ShapeError(f"nll_loss: target shape {tuple(target.shape)} does not match input {tuple(input.shape)}")
    valid = cmp.ne(target, ignore_index)
    safe = ew.where(valid, target, ew.const(0, target))
    c = input.shape[cls_dim]
    check_class_weight(weight, c, "nll_loss")
    if safe.numel() and (int(safe.array.min()) < 0 or int(safe.array.max()) >= c):
        from distgraph.errors import IndexOutOfRangeError

        raise IndexOutOfRangeError(f"nll_loss: target out of bounds for {c} classes")
    picked = indexing.gather(input, cls_dim, safe.unsqueeze(cls_dim)).squeeze(cls_dim)
    w = ew.cast(valid, input.array.dtype)
    if weight is not None:
        w = ew.mul(w, indexing.index_select(weight, 0, safe.reshape(-1)).reshape(*safe.shape))
    loss = ew.neg(ew.mul(picked, w))
    if reduction == "mean":
        return weighted_mean(red.sum(loss), red.sum(w))
    return reduce_loss(loss, reduction, "nll_loss")


def _weighted(loss, weight, reduction, op, mean_over_weights):
    """torch 2.13's elementwise `weight` (the input's shape): 'mean' divides by Σ weight (mse, l1) or by
    the element count (huber)."""
    if weight is None:
        return reduce_loss(loss, reduction, op)
    if tuple(weight.shape) != tuple(loss.shape):
        raise ShapeError(f"{op}: weights and input must have the same size, got {tuple(weight.shape)} and "
                         f"{tuple(loss.shape)}")  # fmt: skip
    loss = ew.mul(loss, weight)
    if reduction == "mean" and mean_over_weights:
        return ew.div(red.sum(loss), red.sum(weight))
    return reduce_loss(loss, reduction, op)


@autocast_op("mse_loss")
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    input, target = _broadcast(input, target, "mse_loss")
    return _weighted(ew.square(ew.sub(input, target)), weight, reduction, "mse_loss", True)


@autocast_op("l1_loss")
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    input, target = _broadcast(input, target, "l1_loss")
    return _weighted(ew.abs(ew.sub(input, target)), weight, reduction, "l1_loss", True)


@autocast_op("smooth_l1_loss")
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5·d²/β where |d| < β, else |d| − 0.5·β."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    input, target = _broadcast(input, target, "smooth_l1_loss")
    diff = ew.sub(input, target)
    d = ew.abs(diff)
    if beta == 0:
        return reduce_loss(d, reduction, "smooth_l1_loss")
    near = cmp.logical_not(cmp.ge(d, beta))  # NaN too: torch's quadratic branch (|d| < β)
    quad = ew.div(ew.mul(ew.square(_near_only(diff, near)), 0.5), beta)
    return reduce_loss(ew.where(near, quad, ew.sub(d, 0.5 * beta)), reduction, "smooth_l1_loss")


def _near_only(d, near):
    """d where the loss is quadratic, else 0: the unselected quadratic branch then sends no inf · 0 = NaN
    to the gradient where d is infinite (torch's backward picks one branch per element). d is the signed
    difference: squaring |d| would give a second derivative of 0 (abs's slope 0) where input = target."""
    return ew.where(near, d, ew.const(0, d))


@autocast_op("huber_loss")
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """δ · smooth_l1(β=δ): quadratic near zero, linear with slope δ beyond."""
    input, target = _broadcast(input, target, "huber_loss")
    diff = ew.sub(input, target)
    d = ew.abs(diff)
    near = cmp.logical_not(cmp.ge(d, delta))  # NaN too: torch's quadratic branch (|d| < δ)
    loss = ew.where(near, ew.mul(ew.square(_near_only(diff, near)), 0.5), ew.mul(ew.sub(d, 0.5 * delta), delta))
    if loss.dtype != input.dtype:  # torch writes it into a tensor like the input (its backward then refuses)
        loss = cast(loss, input.dtype)
    return _weighted(loss, weight, reduction, "huber_loss", False)


_BCE_EPS = 1e-12  # torch's floor on p·(1 − p) in the gradient of binary_cross_entropy


def _clamped_log(p):
    """log p floored at −100 (log 0 included), computed without a log of 0; no gradient is wanted here."""
    pos = cmp.gt(p, 0)
    return ew.where(pos, ew.clamp(ew.log(ew.where(pos, p, ew.const(1, p))), min=-100), ew.const(-100, p))


@autocast_op("binary_cross_entropy")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Probabilities in [0, 1] against targets; each log is clamped at −100, as torch.

    torch's gradient is not the derivative of that clamped forward: it is (p − t) / max(p·(1 − p), 1e−12),
    finite where a saturated sigmoid gives p = 0 or 1 exactly. Where p·(1 − p) ≥ 1e−12 the plain formula
    has that derivative (and its logs are far from the clamp); elsewhere the loss is the clamped value
    (constant in p) plus a term whose derivative in p is (p − t)/1e−12 and whose value is 0.
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    _check_same_shape(input, target, "binary_cross_entropy")
    _check_weight_fits(weight, input, "weight", "binary_cross_entropy")
    a = input.array
    if a.size and not bool(((a >= 0) & (a <= 1)).all()):  # NaN included, as torch
        raise InputRangeError(
            f"binary_cross_entropy: input {tuple(input.shape)} {input.dtype.name} must hold probabilities in "
            f"[0, 1], got values in [{float(a.min())}, {float(a.max())}]"
        )
    ok = cmp.ge(ew.mul(input, ew.rsub(input, 1)), _BCE_EPS)
    half = ew.const(0.5, input)
    p_in, p_out = ew.where(ok, input, half), ew.where(ok, half, input)  # logs of p_in stay finite
    inner = ew.neg(ew.add(ew.mul(target, ew.log(p_in)), ew.mul(ew.rsub(target, 1), ew.log(ew.rsub(p_in, 1)))))
    fixed = p_out.detach()
    log_p, log_q = _clamped_log(fixed), _clamped_log(ew.rsub(fixed, 1))
    d = ew.sub(p_out, target.detach())
    slope = ew.div(ew.sub(ew.square(d), ew.square(d.detach())), 2 * _BCE_EPS)
    edge = ew.add(ew.add(ew.neg(log_q), ew.mul(target, ew.sub(log_q, log_p))), slope)
    loss = ew.where(ok, inner, edge)
    if weight is not None:
        loss = ew.mul(loss, weight)
    return reduce_loss(loss, reduction, "binary_cross_entropy")


@autocast_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):  # fmt: skip
    """BCE on logits through log σ(x) and log σ(−x), stable for any |x|."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    op = "binary_cross_entropy_with_logits"
    _check_same_shape(input, target, op)
    _check_weight_fits(weight, input, "weight", op)
    _check_weight_fits(pos_weight, input, "pos_weight", op)
    pos = ew.mul(target, act.logsigmoid(input))
    if pos_weight is not None:
        pos = ew.mul(pos, pos_weight)
    loss = ew.neg(ew.add(pos, ew.mul(ew.rsub(target, 1), act.logsigmoid(ew.neg(input)))))
    if weight is not None:
        loss = ew.mul(loss, weight)
    if loss.dtype != target.dtype and target.is_floating_point():  # torch computes it in place into 1 - target
        loss = cast(loss, target.dtype)
    return reduce_loss(loss, reduction, "binary_cross_entropy_with_logits")


def _check_weight_fits(weight, input, name, op):
    """A weight (or pos_weight) must broadcast to the input's shape without growing it, as torch's."""
    if weight is None or tuple(weight.shape) == tuple(input.shape):
        return
    shape = tuple(input.shape)
    try:
        fits = np.broadcast_shapes(tuple(weight.shape), shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"{op}: {name} of shape {tuple(weight.shape)} does not broadcast to the input's shape {shape}")


_KL_MEAN_WARNING = (  # torch's words
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


@autocast_op("kl_div")
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Σ target · log target − target · input, input being log-probabilities; 'batchmean' divides by the batch size.
    The two broadcast, as torch's elementwise formula does."""
    _check_broadcast(input, target, "kl_div")
    if log_target:
        loss = ew.mul(ew.exp(target), ew.sub(target, input))
    else:  # torch's xlogy(target, target) − target · input, rounded as torch's: 0 · log 0 = 0, and where
        # log target and input differ by an ulp the two products often still round alike, giving 0. The
        # log of a zero target is taken (its -inf keeps torch's NaN gradient there) without numpy's warning,
        # which torch does not give: zeros are ordinary targets
        with np.errstate(divide="ignore", invalid="ignore"):
            xlogx = ew.where(cmp.eq(target, 0), ew.const(0, target), ew.mul(target, ew.log(target)))
        loss = ew.sub(xlogx, ew.mul(target, input))
    if size_average is not None or reduce is not None:  # torch: no 'batchmean' advice then
        reduction = _legacy(size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn(_KL_MEAN_WARNING, stacklevel=2)
    if reduction == "batchmean":
        return ew.div(red.sum(loss), input.shape[0] if input.ndim else 1)
    return reduce_loss(loss, reduction, "kl_div")


@autocast_op("soft_margin_loss")
def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """log(1 + exp(−y·x)) for labels y ∈ {−1, 1}."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    _check_same_shape(input, target, "soft_margin_loss")
    return reduce_loss(act.softplus(ew.neg(ew.mul(input, target))), reduction, "soft_margin_loss")


@autocast_op("margin_ranking_loss")
def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None, reduction="mean"):
    """max(0, −y·(x1 − x2) + margin); the three must have one rank (then they broadcast), as torch."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    if not input1.ndim == input2.ndim == target.ndim:
        raise ShapeError(
            f"margin_ranking_loss: all input tensors should have the same dimension, got input1 "
            f"{tuple(input1.shape)}, input2 {tuple(input2.shape)}, target {tuple(target.shape)}"
        )
    # clamp_min, not relu, as torch: at a tie with margin 0 the gradient passes (relu's is 0 there, and scores
    # that start equal would never move)
    loss = clamp_min(ew.add(ew.neg(ew.mul(target, ew.sub(input1, input2))), margin), 0)
    return reduce_loss(loss, reduction, "margin_ranking_loss")


@autocast_op("poisson_nll_loss")
def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                     reduction="mean"):  # fmt: skip
    """Negative log-likelihood of a Poisson with rate exp(input) (log_input) or input."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    if log_input:
        loss = ew.sub(ew.exp(input), ew.mul(target, input))
    else:
        loss = ew.sub(input, ew.mul(target, ew.log(ew.add(input, eps))))
    if full:  # Stirling's approximation of log(target!), where target > 1 (logs taken there only)
        big = cmp.gt(target, 1)
        t = ew.where(big, target, ew.const(2, target))
        stirling = ew.add(ew.sub(ew.mul(t, ew.log(t)), t), ew.mul(ew.log(ew.mul(t, 2 * math.pi)), 0.5))
        loss = ew.add(loss, ew.where(big, stirling, ew.const(0, loss)))
    return reduce_loss(loss, reduction, "poisson_nll_loss")


def _gaussian_var(input, var):
    """torch's variance shapes: the input's; one dim short (one variance per sample, unsqueezed); or the input's
    with exactly one dim of size 1 where the input's is larger. A float is one variance for every element."""
    if not isinstance(var, Tensor):
        if var < 0:
            raise InputRangeError(f"gaussian_nll_loss: var has negative entry/entries (got {var})")
        return ew.add(ew.mul(input.detach(), 0), float(var))
    if var.numel() and bool((var.array < 0).any()):
        raise InputRangeError("gaussian_nll_loss: var has negative entry/entries")
    shape, vshape = tuple(input.shape), tuple(var.shape)
    if vshape == shape:
        return var
    if vshape == shape[:-1]:
        return var.unsqueeze(-1)
    if len(vshape) == len(shape) and sum(v for i, v in zip(shape, vshape) if i != v) == 1:
        return var
    raise ShapeError(f"gaussian_nll_loss: var is of incorrect size {vshape} for input {shape}")


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 · (log var + (input − target)² / var), var clamped at eps (without gradient through the clamp)."""
    var = _gaussian_var(input, var)
    if reduction not in ("none", "mean", "sum"):
        raise ConfigError(f"gaussian_nll_loss: {reduction} is not a valid reduction")
    with_clamp = ew.add(var, ew.sub(ew.clamp(var.detach(), min=eps), var.detach()))
    loss = ew.mul(ew.add(ew.log(with_clamp), ew.div(ew.square(ew.sub(input, target)), with_clamp)), 0.5)
    if full:
        loss = ew.add(loss, 0.5 * math.log(2 * math.pi))
    return reduce_loss(loss, reduction, "gaussian_nll_loss")
