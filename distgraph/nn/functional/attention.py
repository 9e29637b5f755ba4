"""Attention: scaled_dot_product_attention and multi_head_attention_forward, with torch's signatures.

Both are compositions of registered ops (matmul, where, safe_softmax / softmax, linear, cat, pad; without
a mask, the weights are one op, ops/attention.py), so they differentiate to any order and capture into
graphs like other model code. No mask value is read
on the host (only shapes and dtypes are checked), so a captured graph replays them on new masks.

The two mask conventions differ, as in torch:
- scaled_dot_product_attention: a bool attn_mask says which positions take part (True = attend); a
  float mask is added to the scores. A query row left with no position gives 0 (torch._safe_softmax).
- multi_head_attention_forward: a bool attn_mask or key_padding_mask says which positions are ignored
  (True = masked); both become float masks of -inf and 0 and are summed. With need_weights=True the
  weights go through plain softmax, so a fully masked row is NaN (as torch's); with need_weights=False
  the call goes through scaled_dot_product_attention, where that row is 0 (as torch's).
"""

import math
import warnings

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, DTypeError, InputRangeError, ShapeError
from distgraph.nn.functional.layers import dropout, linear, pad
from distgraph.ops import attention as fused
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg, same_dtype
from distgraph.ops import reduction as red
from distgraph.ops import shape as sh
from distgraph.ops.autocast import autocast_op

_SDPA = "scaled_dot_product_attention"
_MHA = "multi_head_attention_forward"


# ---- scaled dot-product attention -----------------------------------------------------------------------
@autocast_op("scaled_dot_product_attention")
def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """softmax(q·kᵀ·scale + mask)·v over the last two dims; leading (batch, head) dims broadcast.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev). `is_causal` lets query i
    see keys 0..i (the top-left aligned lower triangle, also when L != S). With `enable_gqa`, dim -3
    of key and value (their heads) is repeated to query's number of heads (grouped-query attention).
    Dropout is applied to the weights whenever dropout_p > 0 (the function has no training flag).
    """
    _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        key = sh.repeat_interleave(key, query.shape[-3] // key.shape[-3], dim=key.ndim - 3)
    if enable_gqa and value.shape[-3] != query.shape[-3]:
        value = sh.repeat_interleave(value, query.shape[-3] // value.shape[-3], dim=value.ndim - 3)
    scale = 1.0 / math.sqrt(query.array.shape[-1]) if scale is None else scale
    if attn_mask is None and fused.fusable(query, key):
        weights_t = fused.attention_weights_t(query, key, scale, is_causal)  # (..., S, L): transposed
        if dropout_p > 0:
            weights_t = dropout(weights_t, dropout_p)
        return fused.weighted_values(weights_t, value)
    weights = _masked_weights(query, key, attn_mask, is_causal, scale)  # (..., L, S)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return linalg.matmul(weights, value)


def _masked_weights(query, key, attn_mask, is_causal, scale):
    """The weights composed from ops: a float mask (which may want a gradient) or a bool one, with rows a
    bool mask leaves empty giving 0 (safe_softmax)."""
    scores = ew.mul(linalg.matmul(query, sh.transpose(key, -2, -1)), scale)  # (..., L, S)
    if is_causal:  # with an attn_mask too: both apply (torch's fused CPU kernel; _check_causal_mask)
        scores = ew.where(_causal(query.shape[-2], key.shape[-2], query), scores, ew.const(-math.inf, scores))
    if attn_mask is not None and attn_mask.array.dtype.kind == "b":
        scores = ew.where(attn_mask, scores, ew.const(-math.inf, scores))
    elif attn_mask is not None:
        scores = ew.add(scores, attn_mask if attn_mask.dtype == query.dtype else ew.cast(attn_mask, query.array.dtype))
    return linalg.safe_softmax(scores, -1)


def _causal(L, S, like):
    """(L, S) bool: True where key j <= query i (a constant; it depends on shapes only)."""
    xp = like.device.xp
    return Tensor(xp.tril(xp.ones((L, S), dtype=bool)), device=like.device)


def _shapes(**named):
    return ", ".join(f"{k} {tuple(v.array.shape)}" for k, v in named.items() if v is not None)


def _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa):
    shapes = _shapes(query=query, key=key, value=value)
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise ShapeError(f"{_SDPA}: query, key and value must be at least 2-D, got {shapes}")
    dt = query.array.dtype
    if key.array.dtype != dt or value.array.dtype != dt:  # torch's words
        q, k, v = (same_dtype.cpp(t) for t in (query, key, value))
        raise DTypeError(
            f"Expected query, key, and value to have the same dtype, but got query.dtype: {q} key.dtype: {k} "
            f"and value.dtype: {v} instead."
        )
    if dt.kind != "f":
        raise DTypeError(f"{_SDPA}: query, key and value must be floating, got {query.dtype.name}")
    if query.array.shape[-1] != key.array.shape[-1]:
        raise ShapeError(f"{_SDPA}: query and key must have the same embedding size (last dim), got {shapes}")
    if key.array.shape[-2] != value.array.shape[-2]:
        raise ShapeError(f"{_SDPA}: key and value must have the same sequence length (dim -2), got {shapes}")
    if not 0 <= dropout_p <= 1:
        raise InputRangeError(f"{_SDPA}: dropout probability has to be between 0 and 1, but got {dropout_p}")
    lead = [tuple(t.array.shape[:-2]) for t in (query, key, value)]
    if enable_gqa:
        if min(query.ndim, key.ndim, value.ndim) < 3:
            raise ShapeError(f"{_SDPA}: enable_gqa needs a heads dim (-3) in query, key and value, got {shapes}")
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if hq % hk or hq % hv:
            raise ShapeError(
                f"{_SDPA}: with enable_gqa the heads of key ({hk}) and value ({hv}) must divide the heads of "
                f"query ({hq}) (dim -3), got {shapes}"
            )
        lead = [s[:-1] + (hq,) for s in lead]
    try:
        batch = np.broadcast_shapes(*lead)
    except ValueError:
        raise ShapeError(f"{_SDPA}: the batch dims (all but the last two) do not broadcast: {shapes}") from None
    if attn_mask is None:
        return
    if is_causal:
        _check_causal_mask(query, key, value, attn_mask, dropout_p, enable_gqa)
    if attn_mask.array.dtype not in (np.bool_, np.float32, dt):  # torch's words
        raise DTypeError(
            f"Expected attn_mask dtype to be bool or float or to match query dtype, but got attn_mask.dtype: "
            f"{same_dtype.cpp(attn_mask)} and  query.dtype: {same_dtype.cpp(query)} instead."
        )
    scores = (*batch, query.shape[-2], key.shape[-2])
    try:
        fits = np.broadcast_shapes(tuple(attn_mask.shape), scores) == scores
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{_SDPA}: attn_mask {tuple(attn_mask.shape)} does not broadcast to the attention weights {scores} "
            f"({shapes})"
        )


def _check_causal_mask(query, key, value, attn_mask, dropout_p, enable_gqa):
    """torch on CPU applies both an attn_mask and is_causal where its fused kernel runs (4-D query, key and
    value of one batch size and head count, or grouped with enable_gqa; equal head dims; a 2-D or 4-D mask
    that needs no gradient; no dropout); its other kernels refuse the pair, as here."""
    q, k, v = (tuple(t.shape) for t in (query, key, value))
    fused = (
        len(q) == len(k) == len(v) == 4
        and q[0] == k[0] == v[0]
        and (q[1] == k[1] == v[1] or enable_gqa)
        and q[-1] == k[-1] == v[-1]
        and attn_mask.ndim in (2, 4)
        and not attn_mask.requires_grad
        and dropout_p == 0
    )
    if not fused:
        raise ConfigError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")


# ---- multi-head attention ---------------------------------------------------------------------------------
def multi_head_attention_forward(
    query,
    key,
    value,
    embed_dim_to_check,
    num_heads,
    in_proj_weight,
    in_proj_bias,
    bias_k,
    bias_v,
    add_zero_attn,
    dropout_p,
    out_proj_weight,
    out_proj_bias,
    training=True,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    use_separate_proj_weight=False,
    q_proj_weight=None,
    k_proj_weight=None,
    v_proj_weight=None,
    static_k=None,
    static_v=None,
    average_attn_weights=True,
    is_causal=False,
):
    """torch.nn.functional.multi_head_attention_forward: sequence-first (L, N, E) or unbatched (L, E).

    Returns (attn_output, attn_weights); the weights are None unless need_weights, averaged over the
    heads unless average_attn_weights is False.
    """
    batched = _check_mha_inputs(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not batched:
        query, key, value = (sh.unsqueeze(t, 1) for t in (query, key, value))
        key_padding_mask = None if key_padding_mask is None else sh.unsqueeze(key_padding_mask, 0)
    tgt_len, bsz, embed_dim = query.array.shape
    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", query, attn_mask, "attn_mask")
    if is_causal and attn_mask is None:
        raise ConfigError(
            f"{_MHA}: is_causal needs attn_mask too (the causal mask itself, e.g. "
            "nn.Transformer.generate_square_subsequent_mask); it is only a hint"
        )
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # the hint alone: scaled_dot_product_attention builds the causal mask
    else:
        attn_mask = _canonical_mask(attn_mask, "attn_mask", query)
        is_causal = is_causal and key_padding_mask is None  # a merged mask is no longer causal
    head_dim = _check_mha_dims(query, key, value, embed_dim_to_check, num_heads, use_separate_proj_weight)
    if use_separate_proj_weight:
        ws = _required(q_proj_weight=q_proj_weight, k_proj_weight=k_proj_weight, v_proj_weight=v_proj_weight)
        biases = (None,) * 3 if in_proj_bias is None else sh.chunk(in_proj_bias, 3)
        q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value), ws, biases))
    else:
        q, k, v = _in_projection_packed(query, key, value, *_required(in_proj_weight=in_proj_weight), in_proj_bias)
    added = 0  # key columns appended below (bias_k, a zero key): the masks grow by as many
    masks = (None if attn_mask is None else _mask_as_3d(attn_mask, bsz * num_heads, tgt_len, key.shape[0]),)
    masks += (key_padding_mask,)
    if bias_k is not None and bias_v is not None:  # one more key and value, the same for every sequence
        k = sh.cat([k, sh.repeat(bias_k, 1, bsz, 1)])
        v = sh.cat([v, sh.repeat(bias_v, 1, bsz, 1)])
        masks, added = _one_more_key(*masks), added + 1
    elif bias_k is not None or bias_v is not None:
        raise ConfigError(f"{_MHA}: bias_k and bias_v must be given together")
    # (L, N, E) -> (N*H, L, head_dim): heads become batch entries
    q = sh.transpose(sh.reshape(q, tgt_len, bsz * num_heads, head_dim), 0, 1)
    k = _heads(k, static_k, "static_k", bsz * num_heads, head_dim)
    v = _heads(v, static_v, "static_v", bsz * num_heads, head_dim)
    if add_zero_attn:  # one more key and value, of zeros
        zeros = Tensor(k.device.xp.zeros((bsz * num_heads, 1, head_dim), k.array.dtype), device=k.device)
        k, v = sh.cat([k, zeros], dim=1), sh.cat([v, zeros], dim=1)
        masks, added = _one_more_key(*masks), added + 1
    src_len = k.array.shape[1]
    # checked here, as torch: static_k, when given, has replaced the keys (and sets the source length)
    if masks[1] is not None and tuple(masks[1].shape) != (bsz, src_len):
        raise ShapeError(
            f"{_MHA}: expected key_padding_mask of shape {(bsz, src_len - added)} (batch, source length), got "
            f"{tuple(key_padding_mask.shape)}" + ("" if static_k is None else " (static_k sets the source length)")
        )
    attn_mask = _merge_key_padding(*masks, bsz, num_heads, src_len)
    dropout_p = dropout_p if training else 0.0
    if need_weights:
        out, weights = _attention_with_weights(q, k, v, attn_mask, dropout_p)  # (N*H, L, head_dim), (N*H, L, S)
        out = sh.reshape(sh.transpose(out, 0, 1), tgt_len * bsz, embed_dim)
        weights = sh.reshape(weights, bsz, num_heads, tgt_len, src_len)
        weights = red.mean(weights, dim=1) if average_attn_weights else weights
    else:
        out = _attention_fused(q, k, v, attn_mask, dropout_p, is_causal, bsz, num_heads)  # (N, H, L, head_dim)
        out, weights = sh.reshape(sh.permute(out, 2, 0, 1, 3), tgt_len * bsz, embed_dim), None
    out = sh.reshape(linear(out, out_proj_weight, out_proj_bias), tgt_len, bsz, embed_dim)
    if not batched:
        out = sh.squeeze(out, 1)
        weights = None if weights is None else sh.squeeze(weights, 0)
    return out, weights


def _required(**weights):
    missing = [name for name, w in weights.items() if w is None]
    if missing:
        raise ConfigError(f"{_MHA}: {', '.join(missing)} must be given (use_separate_proj_weight selects which)")
    return tuple(weights.values())


def _one_more_key(attn_mask, key_padding_mask):
    """Both masks (either may be None) widened by one key that every query may attend to."""
    return tuple(None if m is None else pad(m, (0, 1)) for m in (attn_mask, key_padding_mask))


def _merge_key_padding(attn_mask, key_padding_mask, bsz, num_heads, src_len):
    """attn_mask (1 or N*H, L, S) + key_padding_mask (N, S) spread over the heads: one float mask (or None)."""
    if key_padding_mask is None:
        return attn_mask
    kpm = sh.expand(sh.reshape(key_padding_mask, bsz, 1, 1, src_len), -1, num_heads, -1, -1)
    kpm = sh.reshape(kpm, bsz * num_heads, 1, src_len)
    return kpm if attn_mask is None else ew.add(attn_mask, kpm)


def _attention_with_weights(q, k, v, attn_mask, dropout_p):
    """torch's need_weights path: the (N*H, L, S) weights by plain softmax, and the weighted values."""
    scores = linalg.matmul(ew.mul(q, math.sqrt(1.0 / q.shape[-1])), sh.transpose(k, -2, -1))
    if attn_mask is not None:
        scores = ew.add(attn_mask, scores)
    weights = linalg.softmax(scores, -1)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return linalg.matmul(weights, v), weights


def _attention_fused(q, k, v, attn_mask, dropout_p, is_causal, bsz, num_heads):
    """torch's need_weights=False path: one scaled_dot_product_attention on (N, H, L, head_dim)."""
    src_len = k.array.shape[1]
    if attn_mask is not None:
        attn_mask = sh.reshape(attn_mask, 1 if attn_mask.shape[0] == 1 else bsz, -1, attn_mask.shape[1], src_len)
    q, k, v = (sh.reshape(t, bsz, num_heads, t.array.shape[1], t.array.shape[2]) for t in (q, k, v))
    return scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)


def _in_projection_packed(query, key, value, w, b):
    """q, k, v = x·W_qᵀ, x·W_kᵀ, x·W_vᵀ (+ b) with W packed as (3E, E); one product per distinct input."""
    E = query.array.shape[-1]
    if key is value and query is key:  # self-attention
        return sh.chunk(linear(query, w, b), 3, -1)
    w_q, w_k, w_v = sh.chunk(w, 3)
    b_q, b_k, b_v = (None,) * 3 if b is None else sh.chunk(b, 3)
    if key is value:  # encoder-decoder attention
        k, v = sh.chunk(linear(key, sh.narrow(w, 0, E, 2 * E), None if b is None else sh.narrow(b, 0, E, 2 * E)), 2, -1)
        return linear(query, w_q, b_q), k, v
    return linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)


def _heads(t, static, name, batch_heads, head_dim):
    """(S, N, E) -> (N*H, S, head_dim), or the given static (N*H, S, head_dim) key/value."""
    if static is None:
        return sh.transpose(sh.reshape(t, t.array.shape[0], batch_heads, head_dim), 0, 1)
    if static.ndim != 3 or static.shape[0] != batch_heads or static.shape[2] != head_dim:
        raise ShapeError(
            f"{_MHA}: expected {name} of shape (batch*num_heads={batch_heads}, S, head_dim={head_dim}), "
            f"got {tuple(static.shape)}"
        )
    return static


def _canonical_mask(mask, name, query, other=None, other_name=""):
    """A bool mask (True = masked) becomes -inf/0 in query's dtype; a float mask passes as it is."""
    if mask is None:
        return None
    kind = mask.array.dtype.kind
    if kind not in "bf":
        raise DTypeError(f"{_MHA}: only bool and floating types of {name} are supported, got {mask.dtype.name}")
    if other is not None and other.array.dtype != mask.array.dtype:
        warnings.warn(
            f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both instead.",
            stacklevel=3,
        )
    if kind == "f":
        return mask
    return ew.where(mask, ew.const(-math.inf, query), ew.const(0.0, query))


def _mask_as_3d(attn_mask, batch_heads, tgt_len, src_len):
    if attn_mask.ndim == 2:
        if tuple(attn_mask.shape) != (tgt_len, src_len):
            raise ShapeError(
                f"{_MHA}: the shape of the 2-D attn_mask is {tuple(attn_mask.shape)}, but should be "
                f"{(tgt_len, src_len)} (target length, source length)"
            )
        return sh.unsqueeze(attn_mask, 0)
    if tuple(attn_mask.shape) != (batch_heads, tgt_len, src_len):
        raise ShapeError(
            f"{_MHA}: the shape of the 3-D attn_mask is {tuple(attn_mask.shape)}, but should be "
            f"{(batch_heads, tgt_len, src_len)} (batch*num_heads, target length, source length)"
        )
    return attn_mask


def _check_mha_inputs(query, key, value, key_padding_mask, attn_mask, num_heads):
    """Returns whether the input is batched ((L, N, E): True; (L, E): False); raises on wrong ranks."""
    shapes = _shapes(query=query, key=key, value=value, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
    if query.ndim not in (2, 3):
        raise ShapeError(f"{_MHA}: query must be 2-D (unbatched) or 3-D (batched), got {shapes}")
    batched = query.ndim == 3
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ShapeError(f"{_MHA}: key and value must have query's rank ({query.ndim}-D), got {shapes}")
    if key_padding_mask is not None and key_padding_mask.ndim != query.ndim - 1:
        raise ShapeError(
            f"{_MHA}: key_padding_mask must be {query.ndim - 1}-D for a {query.ndim}-D query, got {shapes}"
        )
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        raise ShapeError(f"{_MHA}: attn_mask must be 2-D or 3-D, got {shapes}")
    if not batched and attn_mask is not None and attn_mask.ndim == 3:
        expected = (num_heads, query.shape[0], key.shape[0])
        if tuple(attn_mask.shape) != expected:
            raise ShapeError(f"{_MHA}: expected a 3-D attn_mask of shape {expected} for unbatched input, got {shapes}")
    return batched


def _check_mha_dims(query, key, value, embed_dim_to_check, num_heads, separate):
    """Returns head_dim; raises unless embed_dim matches, divides into heads, and key fits value."""
    shapes = _shapes(query=query, key=key, value=value)
    embed_dim = query.array.shape[-1]
    if embed_dim != embed_dim_to_check:
        raise ShapeError(f"{_MHA}: expected embedding dimension {embed_dim_to_check}, got query {tuple(query.shape)}")
    if embed_dim % num_heads:
        raise ShapeError(f"{_MHA}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if separate and tuple(key.shape[:2]) != tuple(value.shape[:2]):
        raise ShapeError(f"{_MHA}: key's sequence and batch dims do not match value's: {shapes}")
    if not separate and tuple(key.array.shape) != tuple(value.array.shape):
        raise ShapeError(f"{_MHA}: key shape does not match value shape: {shapes}")
    if tuple(key.array.shape[1:-1]) != tuple(query.array.shape[1:-1]):
        raise ShapeError(f"{_MHA}: query and key must have the same batch size (dim 1): {shapes}")
    return embed_dim // num_heads
