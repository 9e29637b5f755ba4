"""Fused classification losses: cross-entropy over class indices as one op.

Composed from log_softmax + gather + mean, a cross-entropy step costs half a dozen ops and as many
temporaries; fused, the forward keeps one (M, C) probability array and backward is one expression,
`scale · ((1−ε)·w_t·(p − onehot) + ε/C·(p·Σw − w))`. When a higher-order gradient is asked for
(create_graph), the rule recomputes p with the differentiable softmax so second derivatives stay exact.
"""

import numpy as np

from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.errors import IndexOutOfRangeError, ShapeError
from distgraph.ops import elementwise as ew
from distgraph.ops.registry import defop


@defop("cross_entropy", kind="other", save=(0,), saves_extra=True)
def _cross_entropy(xp, x, target, *weight, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """x: (M, C) logits, target: (M,) class indices; weight: optional (C,)."""
    m, c = x.shape
    z = x - x.max(axis=1, keepdims=True)
    e = xp.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - xp.log(s)
    p = e / s
    valid = target != ignore_index
    t = xp.where(valid, target, 0)
    if m and (int(t.min()) < 0 or int(t.max()) >= c):
        bad = int(t.max()) if int(t.max()) >= c else int(t.min())
        raise IndexOutOfRangeError(f"cross_entropy: target {bad} is out of bounds for {c} classes")
    rows = xp.arange(m)
    w_t = (weight[0][t] if weight else xp.ones(m, x.dtype)) * valid
    loss = -logp[rows, t] * w_t
    if label_smoothing:
        smooth = -(logp * weight[0]).sum(axis=1) if weight else -logp.sum(axis=1)
        loss = (1 - label_smoothing) * loss + (label_smoothing / c) * smooth * valid
    if reduction == "none":
        out, denom = loss, None
    elif reduction == "sum":
        out, denom = loss.sum(), None
    else:
        denom = w_t.sum()
        out = loss.sum() / denom
    return out.astype(x.dtype, copy=False), (p, t, w_t, valid, denom)


@_cross_entropy.grad
def _(ctx, g):
    x = ctx.inputs[0]
    weight = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    p_arr, t, w_t, valid, denom = ctx.saved
    a = ctx.attrs
    ls, reduction = a.get("label_smoothing", 0.0), a.get("reduction", "mean")
    xp = x.device.xp
    m, c = x.shape
    onehot = xp.zeros((m, c), x.array.dtype)
    onehot[xp.arange(m), t] = 1
    if reduction == "mean":
        g = ew.div(g, float(denom))
    if reduction == "none":
        g = g.reshape(m, 1)
    if is_grad_enabled():  # create_graph: p must carry its own graph
        from distgraph.ops.linalg import softmax

        p = softmax(x, dim=1)
    else:
        p = Tensor(p_arr, device=x.device)
    coef = (1 - ls) * w_t
    base = ew.mul(
        ew.sub(p, Tensor(onehot, device=x.device)), Tensor(coef.reshape(m, 1).astype(x.array.dtype), device=x.device)
    )
    if ls:
        wvec = weight.array if weight is not None else xp.ones(c, x.array.dtype)
        smooth = ew.sub(
            ew.mul(p, float(wvec.sum()) if weight is None else Tensor(xp.asarray(wvec.sum()), device=x.device)),
            Tensor(wvec.reshape(1, c), device=x.device),
        )
        smooth = ew.mul(smooth, Tensor((valid * (ls / c)).reshape(m, 1).astype(x.array.dtype), device=x.device))
        base = ew.add(base, smooth)
    return ew.mul(base, g), None, None


def cross_entropy_indices(input, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy of (N, C) or (N, C, d1, ...) logits against integer targets (N,) / (N, d1, ...)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if target.array.dtype.kind not in "iu":
        raise ShapeError(f"cross_entropy: class-index target must be an integer tensor, got {target.dtype.name}")
    if input.ndim == 1:
        input, target = input.reshape(1, -1), target.reshape(1)
        squeeze = True
    else:
        squeeze = False
    n, c = input.shape[0], input.shape[1]
    spatial = tuple(input.shape[2:])
    if tuple(target.shape) != (n, *spatial):
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


np_float = np.floating  # the fused op works in the input's float dtype
