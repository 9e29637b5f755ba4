"""Fused classification loss: cross-entropy over class indices as one op forward, one op backward.

Composed from log_softmax + gather + mean, a cross-entropy step costs half a dozen ops and as many
temporaries; fused, the forward is one log-softmax pass and the backward one expression,
`scale · ((1−ε)·w_t·(p − onehot) + ε/C·(p·Σw − w))` with p = softmax(x), ε the label smoothing and
w_t the class weight of each row's target. The backward is itself a registered op that recomputes p
from the logits (an exp over (M, C), cheap next to the matmul that made them), so the backward pass
holds no hidden arrays. When a higher-order gradient is asked for (create_graph), the rule is
written with differentiable ops instead, so second derivatives stay exact.
"""

import numpy as np

from distgraph.autograd.function import apply
from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.node_names import named
from distgraph.autograd.tensor import Tensor
from distgraph.errors import IndexOutOfRangeError, ShapeError
from distgraph.ops import cache_blocks
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops.registry import defop


def _targets(xp, x, target, weight, ignore_index, check=False):
    """(t, w_t, valid): safe class indices, per-row weights and the validity mask.

    The common case (no class weights, no target equal to ignore_index) returns w_t = valid = None,
    so forward and backward skip the per-row weighting: a cross-entropy step at digits size is a
    dozen tiny array calls, and each one costs as much as the arithmetic.
    """
    m, c = x.shape
    t, valid = target, None
    if m:
        # without a bounds check and with a negative ignore_index (the default −100), the minimum alone
        # says whether a target is ignored: one reduction instead of two
        lo = int(target.min())
        hi = int(target.max()) if check or ignore_index >= 0 else ignore_index
        if lo <= ignore_index <= hi:
            valid = target != ignore_index
            t = xp.where(valid, target, 0)
            lo, hi = (int(t.min()), int(t.max())) if check else (lo, hi)
        if check and (lo < 0 or hi >= c):
            raise IndexOutOfRangeError(
                f"cross_entropy: target {hi if hi >= c else lo} is out of bounds for {c} classes"
            )
    if weight:
        w_t = weight[0][t] if valid is None else weight[0][t] * valid
    else:
        w_t = None if valid is None else valid
    return t, (None if w_t is None else w_t.astype(x.dtype, copy=False)), valid


def weighted_mean(total, den):
    """total / den, the 'mean' of a loss whose rows carry weights: NaN when den is 0 (every target
    ignored), as torch's value, but with gradient 0 rather than 0·∞ = NaN, as torch's gradient.

    The fused cross-entropy guards the same 0/0 on arrays (`_cross_entropy_backward`); nll_loss, a
    composition of ops, uses this one.
    """
    empty = cmp.eq(den, 0)
    quotient = ew.div(total, ew.where(empty, ew.const(1, den), den))
    return named(ew.where(empty, ew.const(float("nan"), quotient), quotient), "NllLossBackward0")  # (nll_loss's)


def _mean_denominator(m, w_t):
    return m if w_t is None else w_t.sum()


@defop("cross_entropy", kind="other", save=(0,))
def _cross_entropy(xp, x, target, *weight, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """x: (M, C) logits, target: (M,) class indices; weight: optional (C,)."""
    m, c = x.shape
    t, w_t, valid = _targets(xp, x, target, weight, ignore_index, check=True)
    with cache_blocks.row_buffer(x, c):  # (the per-row max broadcast along rows: ops/cache_blocks.py)
        z = x - x.max(axis=1, keepdims=True)
        z_t = z[xp.arange(m), t]
        if label_smoothing:  # −Σ_c w_c log p_c = lse · Σw − z · w: z's part taken before z turns into exp z
            z_w = z @ weight[0] if weight else z.sum(axis=1)
        lse = xp.log(xp.exp(z, out=z).sum(axis=1))  # log Σ exp z, so −log p_c = lse − z_c
    loss = lse - z_t
    if w_t is not None:
        loss *= w_t
    if label_smoothing:
        smooth = lse * weight[0].sum() - z_w if weight else c * lse - z_w
        if valid is not None:
            smooth *= valid
        loss = (1 - label_smoothing) * loss + (label_smoothing / c) * smooth
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = loss.sum()
    elif w_t is None and m:  # no weights, no ignored target: the mean needs no guard
        out = loss.sum() / m
    else:
        with np.errstate(invalid="ignore", divide="ignore"):  # every target ignored: nan, as torch
            out = loss.sum() / _mean_denominator(m, w_t)
    return xp.asarray(out, dtype=x.dtype)


@defop("cross_entropy_backward", kind="other", save=(0, 1))
def _cross_entropy_backward(xp, g, x, target, *weight, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """The gradient of `cross_entropy` w.r.t. the logits, for the output gradient g (per-row operands: with
    numpy's buffer cut to a row, ops/cache_blocks.py; its reductions run along rows or over vectors)."""
    with cache_blocks.row_buffer(x, x.shape[1]):
        return _cross_entropy_grad_array(xp, g, x, target, weight, ignore_index, label_smoothing, reduction)


def _cross_entropy_grad_array(xp, g, x, target, weight, ignore_index, label_smoothing, reduction):
    m, c = x.shape
    t, w_t, valid = _targets(xp, x, target, weight, ignore_index)
    p = x - x.max(axis=1, keepdims=True)  # one (M, C) array, turned into p in place
    xp.exp(p, out=p)
    total = p.sum(axis=1, keepdims=True)
    ls = label_smoothing
    if w_t is None and not ls and (reduction != "mean" or m):  # plain: e · (scale / Σe), then the targets
        scale = g / m if reduction == "mean" else g  # (a 0-d array, or one per row for 'none')
        rows = xp.arange(m)
        e_t = p[rows, t]
        p *= (scale[:, None] if reduction == "none" else scale) / total
        p[rows, t] = (e_t / total[:, 0] - 1) * scale  # (p_t − 1) · scale, as below: exact where p_t ≈ 1
        return p
    p /= total
    if w_t is None:
        grad = p * (1 - ls) if ls else p  # p is this call's own array: it becomes the gradient in place
        grad[xp.arange(m), t] -= 1 - ls
    else:
        coef = (1 - ls) * w_t
        grad = p * coef[:, None] if ls else xp.multiply(p, coef[:, None], out=p)  # (p is read again if ls)
        grad[xp.arange(m), t] -= coef
    if ls:
        wvec = weight[0] if weight else xp.ones(c, x.dtype)
        smooth = (p * wvec.sum() - wvec) * (ls / c)
        grad += smooth if valid is None else smooth * valid[:, None]
    if reduction == "none":
        grad *= g[:, None]
    elif reduction == "sum":
        grad *= g
    elif w_t is None and m:
        grad *= g / m
    else:  # every target ignored: the loss is 0/0 = NaN but the gradient 0, as torch (not 0·∞)
        den = _mean_denominator(m, w_t)
        grad *= g / den if den else 0
    return grad


@_cross_entropy.grad
def _(ctx, g):
    if is_grad_enabled():  # create_graph: the same expression in differentiable ops
        return _cross_entropy_grad_composed(ctx, g), None, None
    return apply(_cross_entropy_backward, (g, *ctx.inputs), ctx.attrs), None, None


@_cross_entropy.array_grad
def _(ctx, g):
    x = ctx.inputs[0]
    arrays = [t.array for t in ctx.inputs]
    return _cross_entropy_backward.forward(x.device.xp, g, *arrays, **ctx.attrs), None, None


def _cross_entropy_grad_composed(ctx, g):
    from distgraph.ops.linalg import softmax

    x, target = ctx.inputs[0], ctx.inputs[1]
    weight = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    a = ctx.attrs
    ls, reduction = a.get("label_smoothing", 0.0), a.get("reduction", "mean")
    xp, dev, dt = x.device.xp, x.device, x.array.dtype
    m, c = x.shape
    t, w_t, valid = _targets(
        xp, x.array, target.array, (weight.array,) if weight is not None else (), a["ignore_index"]
    )
    w_t = xp.ones(m, dt) if w_t is None else w_t
    valid = xp.ones(m, bool) if valid is None else valid
    onehot = xp.zeros((m, c), dt)
    onehot[xp.arange(m), t] = 1
    if reduction == "mean":
        den = float(w_t.sum())
        g = ew.div(g, den) if den else ew.mul(g, 0.0)  # every target ignored: gradient 0, as torch
    elif reduction == "none":
        g = g.reshape(m, 1)
    p = softmax(x, dim=1)
    grad = ew.mul(ew.sub(p, Tensor(onehot, device=dev)), Tensor(((1 - ls) * w_t).reshape(m, 1), device=dev))
    if ls:
        wsum = weight.sum() if weight is not None else float(c)
        wvec = weight.reshape(1, c) if weight is not None else 1.0
        scale = Tensor((valid * (ls / c)).astype(dt).reshape(m, 1), device=dev)
        grad = ew.add(grad, ew.mul(ew.sub(ew.mul(p, wsum), wvec), scale))
    return ew.mul(grad, g)


def check_class_weight(weight, c, op):
    """A class `weight` must hold one value per class: shape (C,), as torch's."""
    if weight is not None and tuple(weight.shape) != (c,):
        raise ShapeError(
            f"{op}: weight tensor should be defined either for all {c} classes or no classes but got weight tensor "
            f"of shape: {list(weight.shape)}"
        )


def cross_entropy_indices(input, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of (N, C) or (N, C, d1, ...) logits against integer targets (N,) / (N, d1, ...)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if target.array.dtype.kind not in "iu":
        raise ShapeError(f"cross_entropy: class-index target must be an integer tensor, got {target.dtype.name}")
    squeeze = input.ndim == 1
    if squeeze:  # unbatched (C,) logits: a 0-d or (1,) target (a (1, 1) one would reshape to fit; torch refuses it)
        if target.ndim > 1 or target.numel() != 1:
            raise ShapeError(
                f"cross_entropy: unbatched input {tuple(input.shape)} needs a 0-d or (1,) class-index target, got "
                f"shape {tuple(target.shape)}"
            )
        input, target = input.reshape(1, -1), target.reshape(1)
    n, c = input.array.shape[0], input.array.shape[1]
    check_class_weight(weight, c, "cross_entropy")
    spatial = tuple(input.array.shape[2:])
    if tuple(target.array.shape) != (n, *spatial):
        raise ShapeError(
            f"cross_entropy: target shape {tuple(target.shape)} does not match input {tuple(input.shape)} "
            f"(expected {(n, *spatial)})"
        )
    if spatial:  # (N, C, d...) -> (N·d..., C)
        from distgraph.ops.shape import movedim

        input = movedim(input, 1, -1).reshape(-1, c)
        target = target.reshape(-1)
    if input.array.dtype.kind != "f":
        input = ew._float_operand(input)
    extra = (weight,) if weight is not None else ()
    out = _cross_entropy(
        input, target, *extra, ignore_index=ignore_index, label_smoothing=float(label_smoothing), reduction=reduction
    )
    if reduction == "none":
        out = out.reshape(n, *spatial) if not squeeze else out.reshape(())
    return out
