"""The functional forms torch exposes at top level (torch.dropout, torch.layer_norm, torch.kl_div, ...),
with torch's top-level signatures, which are ATen's rather than torch.nn.functional's: dropout takes
`train` positionally with no default, losses take `reduction` as an int (0 none, 1 mean, 2 sum),
embedding takes the weight first, batch_norm/instance_norm take every argument in ATen's order, the norms
take a `cudnn_enable(d)` flag they ignore, and max_pool1d_with_indices / adaptive_max_pool1d return
(values, indices). Each one only maps its arguments onto the nn.functional op that computes it.

`dg.<name>` finds these lazily (distgraph/__init__.py's __getattr__ reads `__all__`), so `import distgraph`
does not load nn.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError
from distgraph.nn.functional import activation as fa
from distgraph.nn.functional import activation_extra as fx
from distgraph.nn.functional import distance, extra, layers, loss, norms, pooling_extra
from distgraph.ops import pool
from distgraph.ops.conv import conv1d, conv2d
from distgraph.ops.conv_transpose import conv_transpose1d, conv_transpose2d
from distgraph.ops.resample import pixel_shuffle, pixel_unshuffle

avg_pool1d = pool.avg_pool1d
adaptive_avg_pool1d = pool.adaptive_avg_pool1d
cosine_similarity = layers.cosine_similarity
pairwise_distance = distance.pairwise_distance
bilinear = layers.bilinear
channel_shuffle = pooling_extra.channel_shuffle
prelu = fa.prelu
hardshrink = fa.hardshrink
rms_norm = layers.rms_norm
selu_, celu_, threshold_, rrelu_ = fx.selu_, fx.celu_, fx.threshold_, fx.rrelu_

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _reduction(op, reduction):
    """ATen's int reduction as nn.functional's name; torch's top-level losses take no string."""
    if isinstance(reduction, bool) or reduction not in _REDUCTIONS:
        raise DTypeError(f"{op}: reduction must be 0 (none), 1 (mean) or 2 (sum) at top level, got {reduction!r}")
    return _REDUCTIONS[reduction]


# ---- dropout: (input, p, train), train required ----------------------------------------------------
def dropout(input, p, train):
    return layers.dropout(input, p, train)


def alpha_dropout(input, p, train):
    return layers.alpha_dropout(input, p, train)


def dropout_(input, p, train):
    return layers.dropout(input, p, train, inplace=True)


def alpha_dropout_(input, p, train):
    return layers.alpha_dropout(input, p, train, inplace=True)


# ---- activations ----------------------------------------------------------------------------------------
def selu(input):
    return fa.selu(input)


def celu(input, alpha=1.0):
    return fa.celu(input, alpha)


def threshold(input, threshold, value):
    return fa.threshold(input, threshold, value)


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None):
    if generator is not None:
        raise DTypeError("rrelu: distgraph has one generator per device; pass generator=None (seed with manual_seed)")
    return fx.rrelu(input, lower, upper, training)


# ---- pooling: no return_indices flag; the _with_indices / adaptive forms return both ---------------------
def _stride(stride):
    return None if stride is None or (isinstance(stride, list | tuple) and len(stride) == 0) else stride


def max_pool1d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool2d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool1d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode, return_indices=True)


def adaptive_max_pool1d(input, output_size):
    return pool.adaptive_max_pool1d(input, output_size, return_indices=True)


# ---- embedding and normalization: ATen's argument order -------------------------------------------------
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """torch.embedding: weight first; ATen takes padding_idx as an index as given, so a negative one (-1 its
    default) matches no index: no row is padding (F.embedding counts negatives back from the end)."""
    if not isinstance(weight, Tensor) or not isinstance(indices, Tensor):
        raise DTypeError("embedding: expected (weight, indices) Tensors, in that order (torch.embedding's)")
    pad = padding_idx if padding_idx >= 0 else None
    return layers.embedding(indices, weight, pad, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return layers.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return layers.group_norm(input, num_groups, weight, bias, eps)


def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    return layers.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled):
    return norms.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


# ---- losses: reduction as an int -------------------------------------------------------------------
def kl_div(input, target, reduction=1, *, log_target=False):
    """ATen's kl_div: its mean is the plain elementwise mean, without F.kl_div's warning about 'batchmean'."""
    red = _reduction("kl_div", reduction)
    out = loss.kl_div(input, target, "none" if red == "mean" else red, log_target)
    return out.mean() if red == "mean" else out


def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    return loss.poisson_nll_loss(input, target, log_input, full, eps, _reduction("poisson_nll_loss", reduction))


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction=1):
    return loss.margin_ranking_loss(input1, input2, target, margin, _reduction("margin_ranking_loss", reduction))


def hinge_embedding_loss(input, target, margin=1.0, reduction=1):
    return extra.hinge_embedding_loss(input, target, margin, reduction=_reduction("hinge_embedding_loss", reduction))


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=1):
    red = _reduction("cosine_embedding_loss", reduction)
    return distance.cosine_embedding_loss(input1, input2, target, margin, reduction=red)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction=1):
    red = _reduction("triplet_margin_loss", reduction)
    return distance.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction=red)


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction=1):
    red = _reduction("binary_cross_entropy_with_logits", reduction)
    return loss.binary_cross_entropy_with_logits(input, target, weight, red, pos_weight)


__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "alpha_dropout",
    "alpha_dropout_",
    "avg_pool1d",
    "batch_norm",
    "bilinear",
    "binary_cross_entropy_with_logits",
    "celu",
    "celu_",
    "channel_shuffle",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "cosine_embedding_loss",
    "cosine_similarity",
    "dropout",
    "dropout_",
    "embedding",
    "group_norm",
    "hardshrink",
    "hinge_embedding_loss",
    "instance_norm",
    "kl_div",
    "layer_norm",
    "margin_ranking_loss",
    "max_pool1d",
    "max_pool1d_with_indices",
    "max_pool2d",
    "pairwise_distance",
    "pixel_shuffle",
    "pixel_unshuffle",
    "poisson_nll_loss",
    "prelu",
    "rms_norm",
    "rrelu",
    "rrelu_",
    "selu",
    "selu_",
    "threshold",
    "threshold_",
    "triplet_margin_loss",
]
