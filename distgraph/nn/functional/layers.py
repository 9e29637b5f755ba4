"""Functional forms of the layers: linear, dropout, normalization, embedding, and small tensor utilities."""

import math
import threading
import warnings

import numpy as np

from distgraph.autograd import tensor as tensor_module
from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError, DTypeError, IndexOutOfRangeError, InputRangeError, ShapeError
from distgraph.ops import cache_blocks, fused_batch_norm, layers, linalg, same_dtype
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.autocast import autocast_op
from distgraph.ops.methods import inplace_variant
from distgraph.ops.shape import broadcast_tensors


# ---- linear -------------------------------------------------------------------------------------------------
@autocast_op("linear")
def linear(input, weight, bias=None):
    """x·Wᵀ + b; one fused op when the operands agree in dtype (the common case)."""
    if input.ndim == 0 or weight.ndim == 0:  # a 0-D operand has no feature dim to contract (torch refuses it)
        raise ShapeError(
            f"linear: both arguments to linear need to be at least 1D, but they are {input.ndim}D and {weight.ndim}D"
        )
    if input.array.shape[-1] != weight.array.shape[-1]:
        raise ShapeError(
            f"linear: input features {input.shape[-1]} do not match weight {tuple(weight.shape)} (in_features last)"
        )
    if weight.ndim == 2 and input.array.dtype == weight.array.dtype and (bias is None or bias.dtype == weight.dtype):
        return layers.linear(input, weight, bias)
    if input.array.dtype != weight.array.dtype or (bias is not None and bias.array.dtype != weight.array.dtype):
        same_dtype.linear(input, weight, bias)  # torch's words: it promotes nothing here
    out = linalg.matmul(input, weight.transpose(-2, -1) if weight.ndim > 1 else weight)  # 1-D weight: a dot
    return out if bias is None else ew.add(out, bias)


def bilinear(input1, input2, weight, bias=None):
    """y_o = x1ᵀ·W_o·x2 + b_o over leading batch dims."""
    if (
        weight.ndim != 3
        or input1.shape[:-1] != input2.shape[:-1]
        or (input1.shape[-1], input2.shape[-1]) != tuple(weight.shape[1:])
    ):
        raise ShapeError(
            f"bilinear: inputs {tuple(input1.shape)} and {tuple(input2.shape)} must share their leading dims and "
            f"end with weight {tuple(weight.shape)}'s in1_features and in2_features (its dims 1 and 2)"
        )
    same_dtype.bilinear(input1, input2, weight, bias)
    lead = tuple(input1.shape[:-1])
    x1, x2 = input1.reshape(-1, input1.shape[-1]), input2.reshape(-1, input2.shape[-1])
    out = linalg.einsum("bi,oij,bj->bo", x1, weight, x2)
    out = out if bias is None else ew.add(out, bias)
    return out.reshape(*lead, weight.shape[0])


# ---- dropout ------------------------------------------------------------------------------------------------
def _check_p(p, op):
    if not 0 <= p <= 1:
        raise InputRangeError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")


def _masked(input, mask, inplace, op):
    """input · mask; with torch's inplace=True written into `input` (autograd-recorded), which is returned."""
    if not inplace:
        return ew.mul(input, mask)
    return inplace_variant(lambda x: ew.mul(x, mask), op + "_")(input)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p, scale the survivors by 1/(1−p); identity when not training."""
    _check_p(p, "dropout")
    if not training or p == 0:
        return input
    if p == 1:
        return _masked(input, 0.0, inplace, "dropout")
    return _masked(input, layers.dropout_mask(input, p, input.array.shape, 1.0 / (1 - p)), inplace, "dropout")


def _feature_dropout(input, p, training, batched_ndim, op, inplace):
    """Zero whole channels, torch's reading of each rank: dropout1d takes (C, L) or (N, C, L) only;
    dropout2d reads every input as (N, C, ...), a 3-D one too (1-D channel dropout, with torch's warning);
    dropout3d reads all but 5-D input as unbatched (C, ...). Ranks other than the two documented warn."""
    _check_p(p, op)
    n = input.ndim
    if op == "dropout1d" and n not in (2, 3):
        raise ShapeError(f"dropout1d: expected 2-D or 3-D input, got {tuple(input.shape)}")
    if n not in (batched_ndim - 1, batched_ndim):
        warnings.warn(
            f"{op}: Received a {n}-D input to {op}, which is deprecated and will result in an error in a future "
            "release. To retain the behavior and silence this warning, please use dropout instead.",
            stacklevel=3,
        )
    if op == "dropout2d" and n == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. This behavior will "
            "change in a future release to interpret the input as one without a batch dimension, i.e. shape "
            "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=3,
        )
    lead = 2 if op == "dropout2d" or n == batched_ndim else 1  # (N, C, ...) or unbatched (C, ...)
    if n < lead:
        raise ShapeError(f"{op}: feature dropout needs a channel dim, got input {tuple(input.shape)}")
    if not training or p == 0:
        return input
    return drop_channels(input, p, lead, inplace, op)


def channel_shape(input, lead):
    """The shape of a per-channel draw: input's first `lead` dims, then 1s (broadcast over the rest)."""
    return (*input.shape[:lead], *(1,) * (input.ndim - lead))


def drop_channels(input, p, lead, inplace, op):
    """Dropout of whole channels (one draw per index of the first `lead` dims), survivors scaled by 1/(1−p)."""
    scale = 1.0 / (1 - p) if p < 1 else 0.0
    return _masked(input, layers.dropout_mask(input, p, channel_shape(input, lead), scale), inplace, op)


def dropout1d(input, p=0.5, training=True, inplace=False):
    return _feature_dropout(input, p, training, 3, "dropout1d", inplace)


def dropout2d(input, p=0.5, training=True, inplace=False):
    return _feature_dropout(input, p, training, 4, "dropout2d", inplace)


def dropout3d(input, p=0.5, training=True, inplace=False):
    return _feature_dropout(input, p, training, 5, "dropout3d", inplace)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropped units go to SELU's negative saturation; an affine map restores mean 0 and variance 1."""
    return alpha_dropout_of(input, p, training, inplace, "alpha_dropout", tuple(input.shape))


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """alpha_dropout of whole channels: one draw per (N, C) of (N, C, ...) input."""
    if input.ndim < 2:
        raise ShapeError(
            f"feature_alpha_dropout: feature dropout requires at least 2 dimensions in the input, got "
            f"{tuple(input.shape)}"
        )
    return alpha_dropout_of(input, p, training, inplace, "feature_alpha_dropout", channel_shape(input, 2))


def alpha_dropout_of(input, p, training, inplace, op, shape):
    """alpha dropout with one draw per element of `shape` (the input's own, or channel_shape's)."""
    _check_p(p, op)
    if not training or p == 0:
        return input
    if p == 1:
        return _masked(input, 0.0, inplace, op)
    alpha = 1.7580993408473766
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    keep = layers.dropout_mask(input, p, shape, 1.0)
    shift = ew.add(ew.mul(ew.sub(keep, 1), alpha * a), alpha * a * p)
    out = lambda x: ew.add(ew.mul(x, ew.mul(keep, a)), shift)  # noqa: E731
    return inplace_variant(out, op + "_")(input) if inplace else out(input)


# ---- normalization ------------------------------------------------------------------------------------------
@autocast_op("layer_norm")
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing `normalized_shape` dims (one fused op), then scale and shift."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.array.shape[input.ndim - len(normalized_shape) :]) != normalized_shape or input.ndim < len(
        normalized_shape
    ):
        raise ShapeError(f"layer_norm: input shape {tuple(input.shape)} does not end with {normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.array.shape) != normalized_shape:
            raise ShapeError(f"layer_norm: {name} shape {tuple(t.shape)} != normalized_shape {normalized_shape}")
    if (weight is not None and weight.array.dtype != input.array.dtype) or (
        bias is not None and bias.array.dtype != input.array.dtype
    ):
        same_dtype.norm(input, weight, bias)
    return layers.layer_norm(input, len(normalized_shape), weight, bias, eps)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalize over every dim but the channel dim (1); in training, update the running stats in place.

    Training normalizes with the biased batch variance and folds the unbiased one into running_var,
    as torch does.
    """
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected at least 2-D input (N, C, ...), got {tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != c:
            raise ShapeError(
                f"batch_norm: {name} should contain {c} elements (num_channels of input {tuple(input.shape)}), "
                f"not {t.numel()}"
            )
    dims = (0, *range(2, input.ndim))
    shape = (1, c) + (1,) * (input.ndim - 2)
    n = input.numel() // c
    if training and n <= 1:  # before the dtypes, as torch checks
        raise ShapeError(
            f"batch_norm: expected more than 1 value per channel when training, got input {tuple(input.shape)}"
        )
    same_dtype.norm(input, weight, bias, running_mean, running_var)
    if training:
        if fused_batch_norm.fusable(input, weight, bias):  # one op (the common case)
            out = fused_batch_norm.batch_norm_train(input, weight, bias, eps)
            if running_mean is not None:
                if tensor_module.host_reads is not None:  # being captured: a graph cannot carry this update
                    tensor_module.host_reads(out, "batch_norm's running-statistics update (training mode)")
                mean, var = fused_batch_norm.saved_stats(out, input)
                dev = input.device
                update_running_stats(
                    running_mean, running_var, Tensor(mean, device=dev), Tensor(var, device=dev), n, momentum
                )
            return out
        mean = red.mean(input, dim=dims, keepdim=True)
        var = red.mean(ew.square(ew.sub(input, mean)), dim=dims, keepdim=True)
        if running_mean is not None:
            if tensor_module.host_reads is not None:  # being captured: a graph cannot carry this update
                tensor_module.host_reads(mean, "batch_norm's running-statistics update (training mode)")
            update_running_stats(running_mean, running_var, mean, var, n, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ConfigError("batch_norm: eval mode needs running_mean and running_var")
        mean, var = running_mean.reshape(*shape), running_var.reshape(*shape)
    return normalize_affine(input, mean, var, eps, weight, bias, shape)


# while func.vmap's loop runs in this thread: `levels`, the arrays it maps over, one list per vmap (func/batching.py)
VMAPPED = threading.local()
_VMAP_UNBATCHED_STATS = (  # torch's words
    "Batch norm got a batched tensor as input while the running_mean or running_var, which will be updated in place, "
    "were not batched.\nIf you are using a module and do not need eval mode, please set `track_running_stats` to be "
    "False.If you are using a prebuilt module and do not need eval mode, please see the functorch website for "
    "resources on how to patch your module to work with vmap"
)


def update_running_stats(running_mean, running_var, mean, var, n, momentum):
    """running ← (1 − m)·running + m·batch statistic, the variance unbiased over its n values, in place and
    outside autograd (batch norm's and SyncBatchNorm's, with its global statistics).

    Under vmap, statistics that are not part of a mapped input would be updated once per element: refused,
    as torch's vmap refuses them (a module's own buffers in training mode, the MAML-with-BatchNorm mistake)."""
    levels = getattr(VMAPPED, "levels", None)
    if levels and not any(running_mean.device.xp.may_share_memory(running_mean.array, a) for lv in levels for a in lv):
        raise RuntimeError(_VMAP_UNBATCHED_STATS)
    c = running_mean.shape[0]
    with no_grad():
        m = momentum
        running_mean.array[...] = (1 - m) * running_mean.array + m * mean.array.reshape(c)
        running_var.array[...] = (1 - m) * running_var.array + m * var.array.reshape(c) * (n / (n - 1))
        running_mean._vc[0] += 1
        running_var._vc[0] += 1


def normalize_affine(input, mean, var, eps, weight, bias, shape):
    """(input − mean) / √(var + eps), then × weight and + bias per channel (each reshaped to `shape`):
    the end of batch, instance and SyncBatchNorm's normalization. Each per-channel operand broadcasts along
    rows of the spatial size: numpy's buffer cut to such a row for the forward (ops/cache_blocks.py). The
    result has the input's dtype, as torch's: a float16 input with float32 parameters and statistics (batch norm
    kept in float32 in a half model) is computed in float32 and rounded once."""
    with cache_blocks.row_buffer(input.array, math.prod(input.array.shape[2:])):
        out = ew.mul(ew.sub(input, mean), ew.rsqrt(ew.add(var, eps)))
        if weight is not None:
            out = ew.mul(out, weight.reshape(*shape))
        if bias is not None:
            out = ew.add(out, bias.reshape(*shape))
    return out if out.array.dtype == input.array.dtype else ew.cast(out, input.array.dtype)


def check_channel_vectors(op, input, weight, bias):
    """weight and bias (each optional) must be (C,), C = input.shape[1], the number of channels."""
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (input.shape[1],):
            raise ShapeError(
                f"{op}: expected {name} to be a vector of size equal to the number of channels in input "
                f"(num_channels={input.shape[1]}), but got {name} of shape {tuple(t.shape)} and input of shape "
                f"{tuple(input.shape)}"
            )


@autocast_op("group_norm")
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each of `num_groups` channel groups of every sample (N, C, ...), then scale and shift per channel."""
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise ShapeError(f"group_norm: {num_groups} groups do not divide the channels of input {tuple(input.shape)}")
    check_channel_vectors("group_norm", input, weight, bias)
    same_dtype.norm(input, weight, bias)
    if input.numel() // num_groups == 1:  # torch: one value per group normalizes to 0 whatever the input
        raise ShapeError(
            f"group_norm: expected more than 1 value per group, got input {tuple(input.shape)} in {num_groups} groups"
        )
    if input.array.dtype == np.float16:  # computed in float32, rounded once (opmath)
        return linalg.opmath(_group_norm, input, weight, bias, num_groups=num_groups, eps=eps)
    return _group_norm(input, weight, bias, num_groups, eps)


def _group_norm(input, weight, bias, num_groups, eps):
    n, c = input.shape[0], input.shape[1]
    grouped = input.reshape(n, num_groups, input.numel() // max(n * num_groups, 1))  # no -1: N may be 0
    rows = min(grouped.shape[2], math.prod(input.shape[2:]))  # per-group and per-channel operands' rows
    with cache_blocks.row_buffer(input.array, rows):  # (its reductions run along rows: the same bits)
        mean = red.mean(grouped, dim=2, keepdim=True)
        centered = ew.sub(grouped, mean)
        var = red.mean(ew.square(centered), dim=2, keepdim=True)
        out = ew.mul(centered, ew.rsqrt(ew.add(var, eps))).reshape(*input.shape)
        shape = (1, c) + (1,) * (input.ndim - 2)
        if weight is not None:
            out = ew.mul(out, weight.reshape(*shape))
        if bias is not None:
            out = ew.add(out, bias.reshape(*shape))
    return out


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / √(mean(x²) + eps) over the trailing dims, times weight; eps defaults to the dtype's machine epsilon."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(normalized_shape) :]) != normalized_shape:
        raise ShapeError(f"rms_norm: input shape {tuple(input.shape)} does not end with {normalized_shape}")
    if weight is not None and tuple(weight.shape) != normalized_shape:
        raise ShapeError(
            f"rms_norm: expected weight to be of same shape as normalized_shape, but got weight of shape "
            f"{tuple(weight.shape)} and normalized_shape = {normalized_shape}"
        )
    if input.array.dtype == np.float16:  # computed in float32, rounded once (opmath)
        return linalg.opmath(_rms_norm, input, weight, normalized_shape=normalized_shape, eps=eps)
    return _rms_norm(input, weight, normalized_shape, eps)


def _rms_norm(input, weight, normalized_shape, eps):
    if eps is None:  # the computing dtype's: float32's for float16 (opmath), as torch's
        eps = float(np.finfo(input.array.dtype).eps)
    dims = tuple(range(-len(normalized_shape), 0))
    with cache_blocks.row_buffer(input.array, math.prod(normalized_shape)):  # (a per-row operand: cache_blocks)
        out = ew.mul(input, ew.rsqrt(ew.add(red.mean(ew.square(input), dim=dims, keepdim=True), eps)))
        if weight is None:
            return out
        out = ew.mul(out, weight)  # a weight of another dtype: the input's dtype all the same, as torch's
        return out if out.array.dtype == input.array.dtype else ew.cast(out, input.array.dtype)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """x / max(‖x‖_p, eps) along `dim`."""
    last = input.ndim and dim in (-1, input.ndim - 1)
    with cache_blocks.row_buffer(input.array, input.shape[-1] if last else 0):  # (a per-row operand: cache_blocks)
        norm = red.norm(input, p=p, dim=dim, keepdim=True)
        return ew.div(input, ew.clamp(norm, min=eps))


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """Σ (x1/‖x1‖)·(x2/‖x2‖) along `dim`, as torch: the inputs are broadcast first (so a size-1 dim
    counts once per copy in the norm), and each norm is floored at eps in value only, its gradient
    being the unfloored norm's (torch clamps in place under no_grad)."""
    x1, x2 = broadcast_tensors(x1, x2)

    def unit(x):
        n = red.norm(x, dim=dim, keepdim=True)
        return ew.div(x, ew.add(n, ew.sub(ew.clamp(n.detach(), min=eps), n.detach())))

    return red.sum(ew.mul(unit(x1), unit(x2)), dim=dim)


# ---- embedding ----------------------------------------------------------------------------------------------
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
    """weight[input]; rows at padding_idx get no gradient; with max_norm, looked-up rows are renormed in place;
    with scale_grad_by_freq, each row's gradient is divided by its index's count in `input`."""
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported (distgraph has no sparse tensors)")
    if input.array.dtype.kind not in "iu":
        raise DTypeError(f"embedding: indices must be an integer tensor, got {input.dtype.name}")
    if weight.ndim != 2:
        raise ShapeError(f"embedding: 'weight' must be 2-D (num_embeddings, embedding_dim), got {tuple(weight.shape)}")
    n = weight.shape[0]
    if input.numel():
        lo, hi = int(input.array.min()), int(input.array.max())
        if lo < 0 or hi >= n:
            raise IndexOutOfRangeError(f"embedding: index {hi if hi >= n else lo} is out of range for {n} embeddings")
    if max_norm is not None:
        _embedding_renorm_(weight, input.reshape(-1), max_norm, norm_type)
    return layers.embedding(input, weight, None if padding_idx is None else padding_idx % n, scale_grad_by_freq)


def _embedding_renorm_(weight, flat, max_norm, norm_type):
    """torch's embedding_renorm_: each looked-up row whose norm_type-norm exceeds max_norm is scaled in place by
    max_norm / (norm + 1e-7), the norm taken in the weight's dtype and the scale in double, as ATen's."""
    xp = weight.device.xp
    with no_grad():
        rows = xp.unique(flat.array)
        sel = weight.array[rows]
        norms = _row_norms(xp, sel, float(norm_type)).astype(np.float64)
        scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(sel.dtype)
        weight.array[rows] = sel * scale[:, None]
        weight._vc[0] += 1


def _row_norms(xp, rows, p):
    """torch's vector p-norm of each row: max |x| for p = inf, min |x| for −inf, the count of nonzeros for 0,
    else (Σ |x|^p)^(1/p); an empty row's norm is 0."""
    a = xp.abs(rows)
    if a.shape[1] == 0:
        return xp.zeros(a.shape[0], a.dtype)
    if p == math.inf:
        return a.max(axis=1)
    if p == -math.inf:
        return a.min(axis=1)
    if p == 0:
        return (a != 0).sum(axis=1).astype(a.dtype)
    with np.errstate(divide="ignore"):  # a zero to a negative p is inf, as torch's
        return (a**p).sum(axis=1) ** (1.0 / p)


# ---- tensor utilities ---------------------------------------------------------------------------------------
def pad(input, pad, mode="constant", value=None):
    from distgraph.ops.regions import pad as _pad

    return _pad(input, pad, mode, value)
