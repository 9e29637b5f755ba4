"""Connectionist temporal classification: the per-sequence negative log-likelihood as one op.

Forward is the alpha recursion of Graves et al. (2006) in log space over the extended label sequence
l' = (blank, l1, blank, l2, ..., blank), one Python step per time step, vectorized over the batch and
the 2·S+1 positions. Backward runs the beta recursion the same way and gives torch's gradient,
`exp(lp) − Σ_{s: l'_s = c} exp(α_ts + β_ts − lp_tc + nll)` for t below each input length (0 past it).
That is torch's choice: the gradient w.r.t. the logits under log_softmax rather than w.r.t. log_probs
themselves; composed with log_softmax, as CTC is meant to be used, both give the same result. Like torch,
the backward has no derivative of its own (double backward raises).

Arrays: log_probs (T, N, C); targets (N, S) padded or (Σ target_lengths,) concatenated; the lengths are
attributes (tuples of ints), so a captured graph records them as constants.
"""

import numpy as np

from distgraph.autograd.function import apply
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.ops.registry import defop


def _padded_targets(xp, targets, target_lengths):
    """(N, S) int64 targets, whichever layout they came in."""
    if targets.ndim == 2:
        return targets.astype(xp.int64, copy=False)
    s = max(target_lengths, default=0)
    out = xp.zeros((len(target_lengths), s), dtype=xp.int64)
    start = 0
    for n, tl in enumerate(target_lengths):
        out[n, :tl] = targets[start : start + tl]
        start += tl
    return out


def _extended(xp, targets, target_lengths, blank):
    """l' (N, L) with L = 2·S+1, the positions of each sequence (`valid`) and where a label may be
    reached by skipping the blank before it (`skip`: a label unlike the one two positions back)."""
    n, s = targets.shape
    ext = xp.full((n, 2 * s + 1), blank, dtype=xp.int64)
    ext[:, 1::2] = targets
    lengths = xp.asarray(target_lengths, dtype=xp.int64).reshape(n, 1)
    valid = xp.arange(2 * s + 1)[None, :] < 2 * lengths + 1
    skip = xp.zeros(ext.shape, dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, valid, skip


def _logsumexp(xp, *terms):
    """log Σ exp over equally shaped arrays, −inf where every term is −inf (no warnings)."""
    m = terms[0]
    for t in terms[1:]:
        m = xp.maximum(m, t)
    finite = xp.isfinite(m)
    shift = xp.where(finite, m, 0)
    total = sum(xp.exp(t - shift) for t in terms)
    return xp.where(finite, shift + xp.log(xp.where(finite, total, 1)), m)


def _shifted(xp, a, k):
    """a moved k positions right along the last axis (k < 0: left), −inf filled."""
    out = xp.full(a.shape, -xp.inf, dtype=a.dtype)
    if k > 0:
        out[..., k:] = a[..., :-k]
    else:
        out[..., :k] = a[..., -k:]
    return out


def _emissions(xp, log_probs, ext):
    """lp[t, n, l'_s] for every t, n, s: (T, N, L)."""
    t = log_probs.shape[0]
    return xp.take_along_axis(log_probs, xp.broadcast_to(ext[None], (t, *ext.shape)), axis=2)


def _alpha(xp, emit, valid, skip):
    t_max = emit.shape[0]
    alpha = xp.full(emit.shape, -xp.inf, dtype=emit.dtype)
    if t_max == 0:
        return alpha
    alpha[0, :, :2] = emit[0, :, :2]
    alpha[0] = xp.where(valid, alpha[0], -xp.inf)
    for t in range(1, t_max):
        prev = alpha[t - 1]
        two_back = xp.where(skip, _shifted(xp, prev, 2), -xp.inf)
        alpha[t] = xp.where(valid, _logsumexp(xp, prev, _shifted(xp, prev, 1), two_back) + emit[t], -xp.inf)
    return alpha


def _beta(xp, emit, valid, skip, input_lengths, target_lengths):
    t_max, n, width = emit.shape
    beta = xp.full(emit.shape, -xp.inf, dtype=emit.dtype)
    lengths = xp.asarray(input_lengths, dtype=xp.int64)
    last = 2 * xp.asarray(target_lengths, dtype=xp.int64)[:, None]
    pos = xp.arange(width)[None, :]
    ends = valid & ((pos == last) | (pos == last - 1))  # where a path may finish
    skip_from = xp.zeros_like(skip)  # s -> s+2 allowed
    skip_from[:, :-2] = skip[:, 2:]
    for t in range(t_max - 1, -1, -1):
        start = (lengths == t + 1)[:, None]
        if t + 1 < t_max:
            nxt = beta[t + 1]
            two_ahead = xp.where(skip_from, _shifted(xp, nxt, -2), -xp.inf)
            inner = _logsumexp(xp, nxt, _shifted(xp, nxt, -1), two_ahead) + emit[t]
        else:
            inner = beta[t]
        beta[t] = xp.where(start, xp.where(ends, emit[t], -xp.inf), xp.where(valid, inner, -xp.inf))
    return beta


def _nll(xp, alpha, input_lengths, target_lengths):
    n = alpha.shape[1]
    nll = xp.empty(n, dtype=alpha.dtype)
    for b, (tn, tl) in enumerate(zip(input_lengths, target_lengths)):
        if tn == 0:  # no frame: probability 1 for an empty target, 0 otherwise
            nll[b] = -0.0 if tl == 0 else xp.inf
            continue
        ends = alpha[tn - 1, b, 2 * tl - 1 : 2 * tl + 1] if tl else alpha[tn - 1, b, :1]
        nll[b] = -_logsumexp(xp, *ends)
    return nll


@defop("ctc_loss", kind="other", save=(0,), saves_extra=True)
def _ctc_loss(xp, log_probs, targets, *, input_lengths, target_lengths, blank, zero_infinity):
    """(N,) negative log-likelihoods; the alphas and the raw nll are kept for backward."""
    padded = _padded_targets(xp, targets, target_lengths)
    ext, valid, skip = _extended(xp, padded, target_lengths, blank)
    alpha = _alpha(xp, _emissions(xp, log_probs, ext), valid, skip)
    nll = _nll(xp, alpha, input_lengths, target_lengths)
    out = xp.where(xp.isinf(nll), 0, nll).astype(nll.dtype) if zero_infinity else nll
    return out, (alpha, nll)


@defop("ctc_loss_backward", kind="other", save=(1,))
def _ctc_loss_backward(xp, g, log_probs, targets, alpha, nll, *, input_lengths, target_lengths, blank,
                       zero_infinity):  # fmt: skip
    """torch's gradient of the (N,) nll w.r.t. log_probs (see the module docstring), times g (N,)."""
    padded = _padded_targets(xp, targets, target_lengths)
    ext, valid, skip = _extended(xp, padded, target_lengths, blank)
    emit = _emissions(xp, log_probs, ext)
    beta = _beta(xp, emit, valid, skip, input_lengths, target_lengths)
    t_max, n, c = log_probs.shape
    with np.errstate(invalid="ignore"):  # an infeasible target without zero_infinity: NaN, as torch
        occupancy = xp.exp(alpha + beta - emit + nll[None, :, None])
    onehot = (ext[:, :, None] == xp.arange(c)[None, None, :]).astype(log_probs.dtype)  # (N, L, C)
    per_class = xp.matmul(occupancy.transpose(1, 0, 2), onehot).transpose(1, 0, 2)  # (T, N, C)
    grad = (xp.exp(log_probs) - per_class) * g[None, :, None]
    live = xp.arange(t_max)[:, None] < xp.asarray(input_lengths, dtype=xp.int64)[None, :]
    if zero_infinity:
        live = live & ~xp.isinf(nll)[None, :]
    return xp.where(live[:, :, None], grad, 0).astype(log_probs.dtype)


def _backward_arrays(ctx, g):
    log_probs, targets = ctx.inputs[0], ctx.inputs[1]
    alpha, nll = ctx.saved
    return log_probs.device.xp, (g, log_probs.array, targets.array, alpha, nll)


@_ctc_loss.grad
def _(ctx, g):
    dev = ctx.inputs[0].device
    alpha, nll = (Tensor(a, device=dev) for a in ctx.saved)
    return apply(_ctc_loss_backward, (g, ctx.inputs[0], ctx.inputs[1], alpha, nll), ctx.attrs), None


@_ctc_loss.array_grad
def _(ctx, g):
    xp, arrays = _backward_arrays(ctx, g)
    return _ctc_loss_backward.forward(xp, *arrays, **ctx.attrs), None


@_ctc_loss_backward.grad
def _(ctx, gg):
    raise AutogradError("ctc_loss: the derivative of its backward is not implemented (double backward), as torch")


def ctc_nll(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity):
    """The (N,) per-sequence losses of checked (T, N, C) log_probs; see nn.functional.ctc_loss. The targets are
    read where log_probs are (torch takes cpu targets beside cuda log_probs); the lengths are ints already."""
    attrs = dict(input_lengths=tuple(input_lengths), target_lengths=tuple(target_lengths), blank=int(blank),
                 zero_infinity=bool(zero_infinity))  # fmt: skip
    return _ctc_loss(log_probs, targets.to(log_probs.device), **attrs)
