"""Scaled dot-product attention without a mask (or with the causal one) as two ops: the weights,
softmax(q·kᵀ·scale) over the keys in one op, and their product with v (linalg's matmul_tn).

Composed, the weights cost five ops over the (..., L, S) scores, each making a fresh array: the product,
its scaling, safe_softmax's shifted copy; backward the softmax gradient's two products and the scaling
again. Fused, the scale is folded into q (an (..., L, E) array, smaller than the scores) before the
product, the causal mask is written into the product as -inf, and the softmax runs in place on it: the
scores are one array, made once.

The weights are kept transposed, (..., S, L): the softmax's max and sum then run down the columns of
a C-contiguous array, which numpy vectorizes across the row (~3x quicker than along a row of 128), and
the product with v as wᵀᵀ·v (matmul_tn) hands back their gradient in the same layout (v·gᵀ), so the
array rule's passes, w·(g − Σ w·g), run on contiguous operands too.

The differentiable rule is the same formula in differentiable ops on the saved output, so gradients of
gradients and captured backward graphs work as through the composition. Rows are never fully masked
(no mask, or the causal one, where query i sees key 0), but inputs holding infinities can make a row
all -inf: as safe_softmax, such a row gives 0, and a zero gradient.
"""

from distgraph.ops import elementwise as ew
from distgraph.ops import linalg
from distgraph.ops import reduction as red
from distgraph.ops import shape as sh
from distgraph.ops.registry import defop, get_op

_MATMUL_TN = get_op("matmul_tn")  # a, b -> aᵀ·b


@defop("attention_weights", kind="other", save=(0, 1), saves_output=True, saved_for={0: 1, 1: 0})
def _attention_weights(xp, q, k, scale, causal):
    """The weights softmax(q·kᵀ·scale) over the keys, transposed: q (..., L, E), k (..., S, E) -> (..., S, L)."""
    s = xp.matmul(k, (q * scale if scale != 1 else q).swapaxes(-1, -2))  # (..., S, L), fresh
    if causal:  # query i sees keys 0..i (top-left aligned): key j > i is masked
        S, L = s.shape[-2:]
        xp.copyto(s, -xp.inf, where=xp.tril(xp.ones((S, L), dtype=bool), -1))
    m = s.max(axis=-2, keepdims=True)
    m[m == -xp.inf] = 0  # an all -inf column: exps of 0, not NaN
    s -= m
    xp.exp(s, out=s)
    total = s.sum(axis=-2, keepdims=True)
    total[total == 0] = 1
    s *= 1 / total
    return s


@_attention_weights.array_grad
def _(ctx, g):
    q, k = ctx.inputs[0].array, ctx.inputs[1].array
    w, xp, scale = ctx.out_array, ctx.inputs[0].device.xp, ctx.attrs["scale"]
    ds = xp.subtract(g, xp.einsum("...ji,...ji->...i", w, g)[..., None, :])
    ds *= w  # (d loss / d scores)ᵀ / scale
    gq = gk = None
    if ctx.next[0] is not None:
        gq = xp.matmul(ds.swapaxes(-1, -2), k)
        gq *= scale
    if ctx.next[1] is not None:
        gk = xp.matmul(ds, q)
        gk *= scale
    return gq, gk


@_attention_weights.grad
def _(ctx, g):
    q, k = ctx.inputs
    w, scale = ctx.out, ctx.attrs["scale"]
    gw = ew.mul(g, w)
    ds = ew.mul(ew.sub(gw, ew.mul(w, red.sum(gw, dim=-2, keepdim=True))), scale)  # (..., S, L)
    gq = linalg.matmul(sh.transpose(ds, -2, -1), k) if ctx.next[0] is not None else None
    gk = linalg.matmul(ds, q) if ctx.next[1] is not None else None
    return gq, gk


def fusable(query, key):
    """Whether attention_weights takes these: float32/float64 operands (float16 keeps the composition's
    rounding, the product's then the scaling's) with no empty dim."""
    return query.array.dtype.name in ("float32", "float64") and query.array.size > 0 and key.array.size > 0


def attention_weights_t(query, key, scale, causal=False):
    """softmax(query·keyᵀ·scale) over the keys (those after the query's position masked if causal),
    transposed: (..., S, L)."""
    return _attention_weights(query, key, scale=float(scale), causal=bool(causal))


def weighted_values(weights_t, value):
    """weights_tᵀ·value: (..., S, L), (..., S, Ev) -> (..., L, Ev)."""
    return _MATMUL_TN(weights_t, value)
