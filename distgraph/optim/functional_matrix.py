"""The update math of the optimizers whose state or step is shaped by the parameter's matrix: Adafactor
(second moments factored into a row and a column vector) and Muon (momentum orthogonalized by a
Newton-Schulz iteration). Same contract as `functional`: torch's single-tensor step on plain arrays, in
place, state under torch's keys, each update run on its parameter's GPU (`functional._elsewhere`).
Registered in `functional.UPDATES` when this module is imported (the `distgraph.optim` package does), so
the classes and the parameter store find them by name as the others.

Muon runs its Newton-Schulz iteration in bfloat16, as torch's does whatever the parameter's dtype: numpy
and cupy have no bfloat16, so the iteration computes in float32 and rounds every op's result to the nearest
bfloat16 (`_round_bfloat16`), which is what torch's CPU kernels do (float32 accumulation, one rounding of
each result, addmm's bias added by a fused multiply-add): on thousands of random matrices the two give the
same bits.
"""

import math
import weakref

import numpy as np

from distgraph.optim.functional import UPDATES, _elsewhere, _lerp_, _on_its_gpu, _xp


def adafactor_update(param, grad, state, *, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                     maximize=False):  # fmt: skip
    """torch's `_single_tensor_adafactor`: relative step min(lr, 1/√t) scaled by the parameter's RMS,
    second moments as row and column means of g² for a matrix (the last two dims), a full variance for a
    vector, the update clipped to RMS <= d."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(adafactor_update, locals())
    xp = _xp(param)
    g = -grad if maximize else grad
    if not state:
        state["step"] = 0
        if grad.ndim > 1:
            state["row_var"] = xp.zeros((*grad.shape[:-1], 1), dtype=grad.dtype)
            state["col_var"] = xp.zeros((*grad.shape[:-2], 1, grad.shape[-1]), dtype=grad.dtype)
        else:
            state["variance"] = xp.zeros_like(grad)
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    state["step"] += 1
    step = float(state["step"])
    one_minus_beta2 = step**beta2_decay
    rho = min(lr, 1 / step**0.5)
    alpha = max(eps2, float(xp.linalg.norm(param.reshape(-1))) / param.size**0.5) * rho
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    if grad.ndim > 1:
        row_mean = xp.square(xp.linalg.norm(g, axis=-1, keepdims=True)) / g.shape[-1]
        _lerp_(state["row_var"], row_mean, one_minus_beta2, xp.empty_like(row_mean))
        col_mean = xp.square(xp.linalg.norm(g, axis=-2, keepdims=True)) / g.shape[-2]
        _lerp_(state["col_var"], col_mean, one_minus_beta2, xp.empty_like(col_mean))
        var = xp.matmul(state["row_var"], state["col_var"])
        var /= xp.maximum(state["row_var"].mean(axis=-2, keepdims=True), eps1)
    else:
        _lerp_(state["variance"], g * g, one_minus_beta2, xp.empty_like(g))
        var = state["variance"].copy()
    update = xp.maximum(var, eps1 * eps1, out=var)
    update = xp.divide(1, xp.sqrt(update, out=update), out=update)
    update *= g
    denom = max(1.0, float(xp.linalg.norm(update.reshape(-1))) / (update.size**0.5 * d))
    update *= -alpha / denom
    param += update


def muon_update(param, grad, state, *, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):  # fmt: skip
    """torch's `_single_tensor_muon`: momentum (a lerp), its Newton-Schulz orthogonalization, decoupled weight
    decay, then a step scaled for the matrix's shape (`adjust_lr_fn`)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(muon_update, locals())
    xp = _xp(param)
    if grad.ndim != 2:
        raise ValueError("Param gradient must be a 2D matrix")
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = xp.zeros_like(grad)
    buf = state["momentum_buffer"]
    _lerp_(buf, grad, 1 - momentum, xp.empty_like(buf))
    if nesterov:
        update = grad.copy()
        _lerp_(update, buf, momentum, xp.empty_like(buf))
    else:
        update = buf
    ortho = zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)
    rows, cols = param.shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    param *= 1 - lr * weight_decay
    param += ortho.astype(param.dtype) * -(lr * ratio)


def zeropower_via_newtonschulz(grad, ns_coefficients, ns_steps, eps):
    """torch's `_zeropower_via_newtonschulz`: ns_steps quintic iterations X <- aX + (bA + cA²)X, A = XXᵀ,
    from X = G/‖G‖ (the wide orientation), in bfloat16 (module docstring); returns float32 arrays holding
    bfloat16 values."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(grad.shape) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    xp = _xp(grad)
    a, b, c = (np.float32(v) for v in ns_coefficients)
    x = _round_bfloat16(grad.astype(np.float32))
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = x.T
    norm = _round_bfloat16(xp.sqrt(xp.sum(xp.square(x), keepdims=True)))
    x = _round_bfloat16(x / xp.maximum(norm, np.float32(eps)))
    for _ in range(ns_steps):
        gram = _round_bfloat16(x @ x.T)
        poly = _addmm(gram, gram, gram, b, c)
        x = _addmm(x, poly, x, a, np.float32(1))
    return x.T if tall else x


def _addmm(bias, m1, m2, beta, alpha):
    """torch's CPU addmm in bfloat16: the product accumulated in float32 and scaled by alpha, then
    beta·bias added by one fused multiply-add (exact in float64 for float32 operands), then one rounding."""
    scaled = alpha * (m1 @ m2)
    return _round_bfloat16((beta.astype(np.float64) * bias + scaled).astype(np.float32))


def _round_bfloat16(x):
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: bfloat16 is the upper
    half of a float32's bits. Infinities stay; NaN stays NaN."""
    xp = _xp(x)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = bits.astype(np.uint32).view(np.float32)
    return xp.where(xp.isnan(x), x, out)


UPDATES.update(adafactor=adafactor_update, muon=muon_update)
# updates that read a parameter's shape: a store that updates flat slices of parameters (ZeRO) refuses them
WHOLE_PARAMETER = frozenset({"adafactor", "muon"})
_SHARDS = {}  # id -> weakref of each parameter whose array is a rank's shard of a larger one (`mark_shard`)


def mark_shard(param):
    """Note that `param` holds one rank's slice of a parameter (FSDP's flat shards, or its original parameters'
    pieces), so an optimizer whose update reads whole parameters (WHOLE_PARAMETER) refuses it when built,
    rather than stepping slices whose result depends on the world size. (An id-keyed dict of weak references:
    a Tensor's == is elementwise, so it cannot sit in a WeakSet.)"""
    key = id(param)
    _SHARDS[key] = weakref.ref(param, lambda _, key=key: _SHARDS.pop(key, None))


def is_shard(param):
    ref = _SHARDS.get(id(param))
    return ref is not None and ref() is param
