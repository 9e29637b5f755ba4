"""Fused layer ops: linear (x·Wᵀ + b), layer_norm, embedding, and dropout's random mask.

Composed from matmul, transpose and add, a Linear layer records three nodes forward and five
backward; at digits-MLP sizes that bookkeeping, not the arithmetic, is the step time. Fused, it
is one node forward, and backward is `g·W`, one `gᵀ·x` op and one sum.

Backward rules recompute what they need from their inputs (no arrays hidden in the node or its
attributes: embedding's indices are an input tensor, not an index baked into the op), so the backward
pass is made of registered ops only and a captured graph replays correctly on new batches. For the
same reason dropout's mask is drawn by an op (`dropout_mask`), so a replayed graph draws a fresh one. When a higher-order
gradient is asked for (create_graph), layer_norm's rule is written out with differentiable ops. One exception, as
torch's: where eager autograd records layer_norm (grad enabled, an input that needs it, no tracer), it runs as
`layer_norm_saving`, which keeps its (M,) mean and rstd for the array rule; no_grad and capture run `layer_norm`.
"""

import math

import numpy as np

from distgraph.autograd.function import apply, records
from distgraph.autograd.grad_mode import is_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device_of_array
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.fused_norm import layer_norm_forward, layer_norm_grads
from distgraph.ops.linalg import _matmul, _mm, matmul, opmath
from distgraph.ops.registry import defop
from distgraph.ops.rng import generator
from distgraph.ops.row_scatter import add_at


# ---- linear -------------------------------------------------------------------------------------------------
@defop("linear", kind="matmul", save=(0, 1))
def _linear(xp, x, w, *b):
    """x: (..., in), w: (out, in), b: optional (out,) -> (..., out)."""
    out = _mm(x, w.T)  # (leading dims folded into one product: linalg._mm)
    if b:
        out += b[0]
    return out


@defop("linear_weight_grad", kind="matmul", save=(0, 1))
def _linear_weight_grad(xp, g, x):
    """gᵀ·x with every leading dim folded into the batch: (..., out), (..., in) -> (out, in)."""
    lead = math.prod(x.shape[:-1])  # not -1: numpy cannot infer it when in or out is 0
    return g.reshape(lead, g.shape[-1]).T @ x.reshape(lead, x.shape[-1])


@_linear.grad
def _linear_grad(ctx, g):
    x, w = ctx.inputs[0], ctx.inputs[1]
    need = ctx.next
    gx = gw = gb = None
    if need[0] is not None:
        gx = apply(_matmul, (g, w)) if g.array.ndim >= 2 else matmul(g, w)
    if need[1] is not None:
        gw = _linear_weight_grad(g, x)
    if len(need) > 2 and need[2] is not None:
        gb = apply(red._sum, (g,), {"axes": tuple(range(g.ndim - 1))}) if g.ndim > 1 else g
    return gx, gw, gb


@_linear.array_grad
def _(ctx, g):
    """The rule above on arrays, each product by the same forward function (same bits), without the
    Tensor and apply() around each of the three."""
    if g.ndim < 2:  # a 1-D input: matmul's vector rules, through the Tensor rule (rare)
        got = _linear_grad(ctx, Tensor(g, device=ctx.inputs[0].device))
        return tuple(None if t is None else t.array for t in got)
    x, w = ctx.inputs[0].array, ctx.inputs[1].array
    need = ctx.next
    gx = _mm(g, w) if need[0] is not None else None
    gw = _linear_weight_grad.forward(None, g, x) if need[1] is not None else None
    gb = g.sum(tuple(range(g.ndim - 1)), None, None, False) if len(need) > 2 and need[2] is not None else None
    return gx, gw, gb


@_linear_weight_grad.grad
def _(ctx, gg):
    g, x = ctx.inputs
    return (_linear(x, gg) if ctx.next[0] is not None else None, matmul(g, gg) if ctx.next[1] is not None else None)


def linear(input, weight, bias=None):
    """y = x·Wᵀ + b as one op (torch.nn.functional.linear)."""
    return _linear(input, weight) if bias is None else _linear(input, weight, bias)


# ---- layer_norm ---------------------------------------------------------------------------------------------
@defop("layer_norm", kind="other", save=(0, 1, 2))
def _layer_norm(xp, x, *wb, k, eps, has_bias):
    """Normalize over the last k dims, then scale by w and shift by b (each optional)."""
    w = wb[0] if len(wb) > has_bias else None
    return layer_norm_forward(xp, x, w, wb[-1] if has_bias else None, k, eps)


@defop("layer_norm_saving", kind="other", save=(0, 1, 2), saves_extra=True)
def _layer_norm_saving(xp, x, *wb, k, eps, has_bias):
    """`layer_norm`, keeping its (M,) mean and rstd for the array rule: (output, (mean, rstd))."""
    w = wb[0] if len(wb) > has_bias else None
    return layer_norm_forward(xp, x, w, wb[-1] if has_bias else None, k, eps, keep=True)


@defop("layer_norm_backward", kind="other", save=(0, 1, 2))
def _layer_norm_backward(xp, g, x, *w, k, eps):
    """d loss / d x: rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)), ĝ = g·w, means over the normalized dims
    (the array rule's bits: one function computes both)."""
    return layer_norm_grads(xp, g, x, w[0] if w else None, k, eps, True, False)[0]


@defop("layer_norm_weight_grad", kind="other", save=(0, 1))
def _layer_norm_weight_grad(xp, g, x, *, k, eps):
    """Σ over the leading dims of g · x̂, the gradient of the scale (the array rule's bits: one function)."""
    return layer_norm_grads(xp, g, x, None, k, eps, False, True)[1]


@_layer_norm.grad
@_layer_norm_saving.grad
def _layer_norm_tensor_grad(ctx, g):
    x, *wb = ctx.inputs
    k, eps, has_bias = ctx.attrs["k"], ctx.attrs["eps"], ctx.attrs["has_bias"]
    w = wb[0] if len(wb) > has_bias else None
    need = ctx.next
    if is_grad_enabled():  # create_graph: the same formula in differentiable ops
        return _layer_norm_grads_composed(g, x, w, k, eps, need, has_bias)
    gx = _layer_norm_backward(g, x, *([w] if w is not None else []), k=k, eps=eps) if need[0] is not None else None
    grads = [gx]
    lead = tuple(range(g.ndim - k))
    if w is not None:
        grads.append(_layer_norm_weight_grad(g, x, k=k, eps=eps) if need[1] is not None else None)
    if has_bias:
        grads.append(red.sum(g, dim=lead) if need[-1] is not None and lead else (g if need[-1] is not None else None))
    return tuple(grads)


@_layer_norm.array_grad
@_layer_norm_saving.array_grad
def _(ctx, g):
    """The rule above on arrays: all three gradients from one centering of x, from the mean and rstd the
    forward kept where it kept them (ctx.saved), else recomputing them (fused_norm.layer_norm_grads)."""
    x, *wb = (t.array for t in ctx.inputs)
    has_bias, need = ctx.attrs["has_bias"], ctx.next
    w = wb[0] if len(wb) > has_bias else None
    if x.size == 0:  # empty: through the Tensor rule
        got = _layer_norm_tensor_grad(ctx, Tensor(g, device=ctx.inputs[0].device))
        return tuple(None if t is None else t.array for t in got)
    nw = need[1] is not None if w is not None else False
    xp, k = ctx.inputs[0].device.xp, ctx.attrs["k"]
    gx, gw = layer_norm_grads(xp, g, x, w, k, ctx.attrs["eps"], need[0] is not None, nw, ctx.saved)
    gb = None
    if has_bias and need[-1] is not None:  # the sum op's own bits (float16 accumulates in float32 there)
        gb = red._sum.forward(xp, g, tuple(range(g.ndim - k)), False, None) if g.ndim > k else g
    return (gx, *((gw,) if w is not None else ()), *((gb,) if has_bias else ()))


def _layer_norm_grads_composed(g, x, w, k, eps, need, has_bias):
    dims = tuple(range(-k, 0))
    mean = red.mean(x, dim=dims, keepdim=True)
    xc = ew.sub(x, mean)
    rstd = ew.rsqrt(ew.add(red.mean(ew.square(xc), dim=dims, keepdim=True), eps))
    xhat = ew.mul(xc, rstd)
    gh = ew.mul(g, w) if w is not None else g
    inner = ew.sub(
        ew.sub(gh, red.mean(gh, dim=dims, keepdim=True)), ew.mul(xhat, red.mean(ew.mul(gh, xhat), dims, True))
    )
    grads = [ew.mul(rstd, inner)]
    if w is not None:
        grads.append(ew.mul(g, xhat) if need[1] is not None else None)  # the engine sums the broadcast dims
    if has_bias:
        grads.append(g)
    return tuple(grads)


def layer_norm(input, k, weight=None, bias=None, eps=1e-5):
    """Fused layer norm over the last `k` dims of `input` (shape checks are nn.functional's)."""
    if input.array.dtype == np.float16:  # computed in float32, rounded once (opmath)
        return opmath(lambda x, w, b: layer_norm(x, k, w, b, eps), input, weight, bias)
    ins = (input, *(t for t in (weight, bias) if t is not None))
    op = _layer_norm_saving if records(ins) else _layer_norm  # (module docstring)
    return apply(op, ins, {"k": k, "eps": float(eps), "has_bias": bias is not None})


# ---- embedding ----------------------------------------------------------------------------------------------
@defop("embedding", kind="index", save=())
def _embedding(xp, weight, indices, *, padding_idx=None, scale_grad_by_freq=False):
    """weight: (V, D), indices: any integer shape -> (*indices.shape, D)."""
    return xp.take(weight, indices, axis=0)


@defop("embedding_backward", kind="index", save=())
def _embedding_backward(xp, g, indices, *, num_weights, padding_idx=None):
    """Rows of g summed into a (V, D) gradient by index; the padding row gets none."""
    out = xp.zeros((num_weights, g.shape[-1]), g.dtype)
    add_at(xp, out, indices, g, fresh=True)  # np.add.at's sums, in rounds of distinct indices
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


@defop("embedding_scale_by_freq", kind="index", save=())
def _embedding_scale_by_freq(xp, g, indices, *, num_weights):
    """g's row at each position divided by how often that position's index occurs in `indices`."""
    counts = xp.bincount(indices.reshape(-1), minlength=num_weights)
    return g / counts[indices][..., None].astype(g.dtype)


_embedding_scale_by_freq.grad(lambda ctx, gg: (_embedding_scale_by_freq(gg, ctx.inputs[1], **ctx.attrs), None))


@_embedding.grad
def _(ctx, g):
    weight, indices = ctx.inputs
    pad = ctx.attrs.get("padding_idx")
    if ctx.attrs.get("scale_grad_by_freq"):  # torch: each row's gradient over its index's count in the batch
        g = _embedding_scale_by_freq(g, indices, num_weights=weight.shape[0])
    return _embedding_backward(g, indices, num_weights=weight.shape[0], padding_idx=pad), None


@_embedding_backward.grad
def _(ctx, gg):
    g, indices = ctx.inputs
    rows = _embedding(gg, indices)
    pad = ctx.attrs.get("padding_idx")
    if pad is not None:  # positions that looked up the padding row got no gradient
        rows = ew.mul(rows, ew.cast(cmp.ne(indices, pad).unsqueeze(-1), rows.array.dtype))
    return rows, None


def embedding(indices, weight, padding_idx=None, scale_grad_by_freq=False):
    """weight[indices] as one op whose backward is one scatter-add (no gradient into the padding row)."""
    return _embedding(weight, indices, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)


# ---- dropout ------------------------------------------------------------------------------------------------
@defop("dropout_mask", kind="other", save=())
def _dropout_mask(xp, x, *, p, shape, scale):
    """scale where a uniform draw is ≥ p, else 0, in x's dtype and on x's device (x gives only those)."""
    keep = generator(device_of_array(x)).random(shape) >= p
    return xp.asarray(keep, dtype=x.dtype) * x.dtype.type(scale)


_dropout_mask.random = True  # graph passes neither merge (CSE) nor constant-fold it


def dropout_mask(input, p, shape, scale):
    """A random keep-mask (no gradient), recorded as an op so a captured graph draws a new one per run."""
    return _dropout_mask(input, p=float(p), shape=tuple(shape), scale=float(scale))
