"""nn.functional: the functional forms of layers and losses, with torch's names and signatures.

Most functions are compositions of registered ops (so they differentiate to any order); the hot
ones are single fused ops: cross-entropy over class indices (`ops.loss`), linear (one matmul + add).
"""

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ShapeError
from distgraph.ops import activation as act
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import indexing, linalg
from distgraph.ops import reduction as red
from distgraph.ops.creation import generator
from distgraph.ops.indexing import one_hot  # noqa: F401  (F.one_hot, as torch)
from distgraph.ops.loss import cross_entropy_indices

# ---- activations (torch.nn.functional names) ------------------------------------------------------------
relu = ew.relu
sigmoid = ew.sigmoid
tanh = ew.tanh
leaky_relu = act.leaky_relu
elu = act.elu
gelu = act.gelu
silu = act.silu
softplus = act.softplus
mish = act.mish
hardtanh = act.hardtanh
relu6 = act.relu6
logsigmoid = act.logsigmoid
softmax = linalg.softmax
log_softmax = linalg.log_softmax


def softsign(input):
    return ew.div(input, ew.add(ew.abs(input), 1))


def _reduce(loss, reduction, op):
    if reduction == "mean":
        return red.mean(loss)
    if reduction == "sum":
        return red.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_same_shape(input, target, op):
    if tuple(input.shape) != tuple(target.shape):
        raise ShapeError(f"{op}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ")


# ---- linear ------------------------------------------------------------------------------------------------
def linear(input, weight, bias=None):
    out = linalg.matmul(input, weight.mT if hasattr(weight, "mT") else weight.transpose(-2, -1))
    return out if bias is None else ew.add(out, bias)


def bilinear(input1, input2, weight, bias=None):
    out = linalg.einsum("bi,oij,bj->bo", input1, weight, input2)
    return out if bias is None else ew.add(out, bias)


# ---- losses ------------------------------------------------------------------------------------------------
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Class indices (integer target) use the fused op; class probabilities (float target) compose."""
    if target.array.dtype.kind in "iu":
        return cross_entropy_indices(input, target, weight, ignore_index, label_smoothing, reduction)
    _check_same_shape(input, target, "cross_entropy")
    c = input.shape[1] if input.ndim > 1 else input.shape[0]
    cls_dim = 1 if input.ndim > 1 else 0
    logp = log_softmax(input, dim=cls_dim)
    if label_smoothing:
        target = ew.add(ew.mul(target, 1 - label_smoothing), label_smoothing / c)
    prod = ew.mul(logp, target)
    if weight is not None:
        shape = [1] * input.ndim
        shape[cls_dim] = c
        prod = ew.mul(prod, weight.reshape(*shape))
    loss = ew.neg(red.sum(prod, dim=cls_dim))
    if reduction == "mean":  # torch: mean over the batch (and spatial) elements, not weighted
        return ew.div(red.sum(loss), max(loss.numel(), 1))
    return _reduce(loss, reduction, "cross_entropy")


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    if input.ndim < 1:
        raise ShapeError(f"nll_loss: input must have a class dimension, got shape {tuple(input.shape)}")
    cls_dim = 1 if input.ndim > 1 else 0
    valid = cmp.ne(target, ignore_index)
    safe = ew.where(valid, target, Tensor(target.device.xp.asarray(0, target.array.dtype), device=target.device))
    picked = indexing.gather(input, cls_dim, safe.unsqueeze(cls_dim)).squeeze(cls_dim)
    w = ew.cast(valid, input.array.dtype)
    if weight is not None:
        w = ew.mul(w, indexing.index_select(weight, 0, safe.reshape(-1)).reshape(*safe.shape))
    loss = ew.neg(ew.mul(picked, w))
    if reduction == "mean":
        return ew.div(red.sum(loss), red.sum(w))
    return _reduce(loss, reduction, "nll_loss")


def mse_loss(input, target, reduction="mean"):
    _check_same_shape(input, target, "mse_loss")
    return _reduce(ew.square(ew.sub(input, target)), reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    _check_same_shape(input, target, "l1_loss")
    return _reduce(ew.abs(ew.sub(input, target)), reduction, "l1_loss")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    _check_same_shape(input, target, "smooth_l1_loss")
    d = ew.abs(ew.sub(input, target))
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    quad = ew.div(ew.mul(ew.square(d), 0.5), beta)
    return _reduce(ew.where(cmp.lt(d, beta), quad, ew.sub(d, 0.5 * beta)), reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0):
    return ew.mul(smooth_l1_loss(input, target, reduction, beta=delta), delta)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    _check_same_shape(input, target, "binary_cross_entropy")
    log_p = ew.clamp(ew.log(input), min=-100)
    log_q = ew.clamp(ew.log(ew.rsub(input, 1)), min=-100)
    loss = ew.neg(ew.add(ew.mul(target, log_p), ew.mul(ew.rsub(target, 1), log_q)))
    if weight is not None:
        loss = ew.mul(loss, weight)
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    _check_same_shape(input, target, "binary_cross_entropy_with_logits")
    log_sig = act.logsigmoid(input)  # log σ(x)
    log_one_minus = act.logsigmoid(ew.neg(input))  # log(1 − σ(x))
    pos = ew.mul(target, log_sig)
    if pos_weight is not None:
        pos = ew.mul(pos, pos_weight)
    loss = ew.neg(ew.add(pos, ew.mul(ew.rsub(target, 1), log_one_minus)))
    if weight is not None:
        loss = ew.mul(loss, weight)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def kl_div(input, target, reduction="mean", log_target=False):
    _check_same_shape(input, target, "kl_div")
    if log_target:
        loss = ew.mul(ew.exp(target), ew.sub(target, input))
    else:
        safe = ew.where(
            cmp.gt(target, 0), target, Tensor(target.device.xp.ones((), target.array.dtype), device=target.device)
        )
        loss = ew.mul(target, ew.sub(ew.log(safe), input))
    if reduction == "batchmean":
        return ew.div(red.sum(loss), input.shape[0])
    return _reduce(loss, reduction, "kl_div")


# ---- regularization and normalization ----------------------------------------------------------------------
def dropout(input, p=0.5, training=True, inplace=False):
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return ew.mul(input, 0)
    xp = input.device.xp
    keep = (generator(input.device).random(input.shape) >= p).astype(input.array.dtype) / (1 - p)
    return ew.mul(input, Tensor(xp.asarray(keep), device=input.device))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[-len(normalized_shape) :]) != normalized_shape:
        raise ShapeError(f"layer_norm: input shape {tuple(input.shape)} does not end with {normalized_shape}")
    dims = tuple(range(-len(normalized_shape), 0))
    mean = red.mean(input, dim=dims, keepdim=True)
    centered = ew.sub(input, mean)
    var = red.mean(ew.square(centered), dim=dims, keepdim=True)
    out = ew.mul(centered, ew.rsqrt(ew.add(var, eps)))
    if weight is not None:
        out = ew.mul(out, weight)
    if bias is not None:
        out = ew.add(out, bias)
    return out


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalize over every dim but the channel dim (1); in training, update running stats in place."""
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected at least 2-D input (N, C, ...), got {tuple(input.shape)}")
    c = input.shape[1]
    dims = (0, *range(2, input.ndim))
    shape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input {tuple(input.shape)}"
            )
        mean = red.mean(input, dim=dims, keepdim=True)
        var = red.mean(ew.square(ew.sub(input, mean)), dim=dims, keepdim=True)
        if running_mean is not None:
            with no_grad():
                m = momentum
                running_mean.array[...] = (1 - m) * running_mean.array + m * mean.array.reshape(c)
                running_var.array[...] = (1 - m) * running_var.array + m * var.array.reshape(c) * n / (n - 1)
                running_mean._vc[0] += 1
                running_var._vc[0] += 1
    else:
        if running_mean is None:
            raise ValueError("batch_norm: eval mode needs running_mean and running_var")
        mean, var = running_mean.reshape(*shape), running_var.reshape(*shape)
    out = ew.mul(ew.sub(input, mean), ew.rsqrt(ew.add(var, eps)))
    if weight is not None:
        out = ew.mul(out, weight.reshape(*shape))
    if bias is not None:
        out = ew.add(out, bias.reshape(*shape))
    return out


def embedding(input, weight, padding_idx=None, max_norm=None):
    if input.array.dtype.kind not in "iu":
        raise ShapeError(f"embedding: indices must be integers, got {input.dtype.name}")
    n = weight.shape[0]
    if input.numel() and (int(input.array.min()) < -n or int(input.array.max()) >= n):
        from distgraph.errors import IndexOutOfRangeError

        raise IndexOutOfRangeError(
            f"embedding: index out of range for {n} embeddings (got {input.array.min()}..{input.array.max()})"
        )
    out = indexing.index_select(weight, 0, input.reshape(-1))
    if padding_idx is not None:
        keep = cmp.ne(input.reshape(-1, 1), padding_idx % n)
        out = ew.mul(out, ew.cast(keep, out.array.dtype))
    return out.reshape(*input.shape, weight.shape[1])


def normalize(input, p=2.0, dim=1, eps=1e-12):
    norm = red.norm(input, p=p, dim=dim, keepdim=True)
    return ew.div(input, ew.clamp(norm, min=eps))


def pad(input, pad, mode="constant", value=None):
    from distgraph.ops.regions import pad as _pad

    return _pad(input, pad, mode, value)
