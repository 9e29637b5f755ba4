"""Batch norm in training mode as one op (nn.functional.batch_norm's fast path).

Composed from mean, sub, square, rsqrt, mul and add, batch norm records eight nodes forward and runs
their rules backward, each a full pass over the input. Fused, the forward makes two passes for the
statistics (the per-channel mean, then the biased variance of the centred values: no cancellation) and
two more to scale and shift; it keeps (mean, var), one value per channel each, for the backward rule and
for the running-statistics update (`saves_extra`). The array rule is the standard batch-norm backward
(per channel Σ g and Σ g·(x − mean)). The differentiable rule is the same formula in differentiable ops,
recomputing the statistics from the input, where a graph is being made (create_graph, a tracer); a captured
graph's vjp node (saves_extra) runs the array rule, so replay and eager backward agree bit for bit.

Per-channel sums of an (N, C, L) array go through BLAS matrix-vector products (rows of L, then the N
rows of C), as layer_norm's do. The per-channel operands broadcast along rows of L, so both rules run with
numpy's ufunc buffer cut to one row (cache_blocks.row_buffer: `bench layers`' row 0.83x its time).
"""

import math

from distgraph.autograd.function import get_tracer
from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.ops import cache_blocks
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.registry import defop


def _as3(x):
    """(N, C, ...) as (N, C, L)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _channel_sum(xp, a3):
    """Σ over dims 0 and 2 of an (N, C, L) array: (C,)."""
    n, c, length = a3.shape
    rows = a3.reshape(n, c) if length == 1 else a3.reshape(n * c, length) @ xp.ones(length, a3.dtype)
    return xp.ones(n, a3.dtype) @ rows.reshape(n, c)


def _channel_dot(xp, a3, b3):
    """Σ over dims 0 and 2 of a3·b3, both (N, C, L): (C,)."""
    n, c, length = a3.shape
    rows = xp.einsum("ij,ij->i", a3.reshape(n * c, length), b3.reshape(n * c, length))
    return xp.ones(n, a3.dtype) @ rows.reshape(n, c)


def batch_stats(xp, x):
    """Per-channel mean and biased variance of x (N, C, ...), and x − mean as (N, C, L)."""
    x3 = _as3(x)
    m = x3.shape[0] * x3.shape[2]
    mean = _channel_sum(xp, x3) / m
    xc = x3 - mean[:, None]
    return mean, _channel_dot(xp, xc, xc) / m, xc


def _rows(x):
    """cache_blocks.row_buffer for x's (N, C, L) passes: each per-channel operand broadcasts along rows of L."""
    return cache_blocks.row_buffer(x, math.prod(x.shape[2:]))


@defop("batch_norm_train", kind="other", save=(0, 1), saves_extra=True)
def _batch_norm_train(xp, x, *wb, eps, has_weight, has_bias):
    """(x − mean) / √(var + eps) · w + b over dims 0, 2, 3, ... (w and b optional, (C,) each)."""
    with _rows(x):
        return _normalized(xp, x, wb, eps, has_weight, has_bias)


def _normalized(xp, x, wb, eps, has_weight, has_bias):
    mean, var, out = batch_stats(xp, x)
    scale = 1.0 / xp.sqrt(var + eps)
    if has_weight:
        scale = scale * wb[0]
    out *= scale[:, None]
    if has_bias:
        out += wb[-1][:, None]
    return out.reshape(x.shape), (mean, var)


@_batch_norm_train.array_grad
def _array_rule(ctx, g, need=None):
    with _rows(ctx.inputs[0].array):
        return _array_grads(ctx, g, need)


def _array_grads(ctx, g, need):
    x = ctx.inputs[0].array
    xp = ctx.inputs[0].device.xp
    has_weight = ctx.attrs["has_weight"]
    mean, var = ctx.saved
    rstd = 1.0 / xp.sqrt(var + ctx.attrs["eps"])
    need = ctx.next if need is None else need
    g3 = _as3(g)
    m = g3.shape[0] * g3.shape[2]
    gsum = _channel_sum(xp, g3)
    want_w = has_weight and need[1] is not None
    gx = gw = dot = None
    if need[0] is not None or want_w:
        xc = _as3(x) - mean[:, None]
        dot = _channel_dot(xp, g3, xc)  # Σ g·(x − mean)
        if want_w:
            gw = dot * rstd
    if need[0] is not None:  # torch: (g − Σg/M − (x − mean)·Σg(x − mean)/(M·var)) · rstd · w
        xc *= (dot * rstd * rstd / m)[:, None]
        gx = g3 - (gsum / m)[:, None]
        gx -= xc
        gx *= (rstd * ctx.inputs[1].array if has_weight else rstd)[:, None]
        gx = gx.reshape(x.shape)
    grads = [gx]
    if has_weight:
        grads.append(gw)
    if ctx.attrs["has_bias"]:
        grads.append(gsum if need[-1] is not None else None)
    return tuple(grads)


@_batch_norm_train.grad
def _(ctx, g):
    """The rule above in differentiable ops where a graph is being made (create_graph, or a tracer), the
    statistics recomputed from x; else (a captured graph's vjp node) the array rule, for the same bits."""
    if not is_grad_enabled() and get_tracer() is None:
        got = _array_rule(ctx, g.array, (True,) * len(ctx.inputs))  # (a vjp node's ctx.next are all None)
        return tuple(None if a is None else Tensor(a, device=g.device) for a in got)
    x, *wb = ctx.inputs
    has_weight, has_bias = ctx.attrs["has_weight"], ctx.attrs["has_bias"]
    need = ctx.next
    dims = (0, *range(2, x.ndim))
    mean = red.mean(x, dim=dims, keepdim=True)
    xc = ew.sub(x, mean)
    rstd = ew.rsqrt(ew.add(red.mean(ew.square(xc), dim=dims, keepdim=True), ctx.attrs["eps"]))
    xhat = ew.mul(xc, rstd)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    gh = ew.mul(g, wb[0].reshape(*shape)) if has_weight else g
    inner = ew.sub(
        ew.sub(gh, red.mean(gh, dim=dims, keepdim=True)), ew.mul(xhat, red.mean(ew.mul(gh, xhat), dims, True))
    )
    grads = [ew.mul(rstd, inner) if need[0] is not None else None]
    if has_weight:
        grads.append(red.sum(ew.mul(g, xhat), dim=dims) if need[1] is not None else None)
    if has_bias:
        grads.append(red.sum(g, dim=dims) if need[-1] is not None else None)
    return tuple(grads)


def fusable(input, weight, bias):
    """Whether batch_norm_train takes these: a C-contiguous float32/float64 input with at least one element,
    weight and bias (optional) of its dtype (anything else goes through the composed ops, which keep
    torch's layout, promotion and float16 handling)."""
    dtype = input.array.dtype
    if dtype.name not in ("float32", "float64") or not input.array.flags.c_contiguous or input.array.size == 0:
        return False
    return all(t is None or t.array.dtype == dtype for t in (weight, bias))


def batch_norm_train(input, weight, bias, eps):
    """The normalized output (weight and bias reshaped to (C,) where they are not)."""
    c = input.shape[1]
    wb = [t if t.ndim == 1 else t.reshape(c) for t in (weight, bias) if t is not None]
    return _batch_norm_train(input, *wb, eps=float(eps), has_weight=weight is not None, has_bias=bias is not None)


def saved_stats(out, input):
    """(mean, biased var) arrays of the batch `out` was normalized with: those the op kept when it was
    recorded, else recomputed from `input`."""
    node = out.grad_fn
    if node is not None and node.op is _batch_norm_train and node.saved is not None:
        return node.saved
    mean, var, _ = batch_stats(input.device.xp, input.array)
    return mean, var


__all__ = ["batch_norm_train", "batch_stats", "fusable", "saved_stats"]
