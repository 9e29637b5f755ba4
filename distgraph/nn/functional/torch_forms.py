"""The functional forms torch exposes at top level (torch.dropout, torch.layer_norm, torch.kl_div, ...),
with torch's top-level signatures, which are ATen's rather than torch.nn.functional's: dropout takes
`train` positionally with no default, losses take `reduction` as an int (0 none, 1 mean, 2 sum),
embedding takes the weight first, batch_norm/instance_norm take every argument in ATen's order, the norms
take a `cudnn_enable(d)` flag they ignore, and max_pool1d_with_indices / adaptive_max_pool1d return
(values, indices). Each one only maps its arguments onto the nn.functional op that computes it.
`convolution` is ATen's one entry for every convolution: the weight's rank picks 1-, 2- or 3-d, `transposed`
the transposed form. The feature dropouts draw one mask entry per (N, C) of any input of 2 dims or more, as
ATen's do (F.dropout2d/3d read the rank first). The RNN cells take the weights explicitly (input, hx, w_ih,
w_hh, b_ih, b_hh) and compute the step with nn's cells (ops/recurrent.py). ATen's native_* forms, grid_sampler,
conv_tbc and embedding_renorm_ are native_forms.py's.

`dg.<name>` finds these lazily (distgraph/__init__.py's __getattr__ reads `__all__`), so `import distgraph`
does not load nn.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.nn.functional import activation as fa
from distgraph.nn.functional import activation_extra as fx
from distgraph.nn.functional import ctc, distance, extra, layers, loss, norms, pooling_extra
from distgraph.nn.functional.embedding_bag import aten_embedding_bag as embedding_bag
from distgraph.nn.functional.native_forms import *  # noqa: F403  (native_layer_norm, conv_tbc, ...: its __all__)
from distgraph.nn.functional.native_forms import __all__ as _NATIVE
from distgraph.ops import pool, pool3d, recurrent
from distgraph.ops.conv import conv1d, conv2d
from distgraph.ops.conv3d import conv3d, conv_transpose3d
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


def _feature_dropout(input, p, train, inplace, op, alpha):
    """ATen's order: p's range, then identity when not training or p is 0, then p = 1 zeroes any input, and only
    then the rank is checked."""
    layers._check_p(p, op)
    if not train or p == 0:
        return input
    if input.ndim < 2 and p != 1:
        raise ShapeError(f"{op}: Feature dropout requires at least 2 dimensions in the input, got {tuple(input.shape)}")
    lead = min(input.ndim, 2)
    if alpha:
        return layers.alpha_dropout_of(input, p, True, inplace, op, layers.channel_shape(input, lead))
    return layers.drop_channels(input, p, lead, inplace, op)


def feature_dropout(input, p, train):
    return _feature_dropout(input, p, train, False, "feature_dropout", alpha=False)


def feature_dropout_(input, p, train):
    return _feature_dropout(input, p, train, True, "feature_dropout", alpha=False)


def feature_alpha_dropout(input, p, train):
    return _feature_dropout(input, p, train, False, "feature_alpha_dropout", alpha=True)


def feature_alpha_dropout_(input, p, train):
    return _feature_dropout(input, p, train, True, "feature_alpha_dropout", alpha=True)


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
def max_pool1d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool3d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool3d.max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool1d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return pool.max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def adaptive_max_pool1d(input, output_size):
    return pool.adaptive_max_pool1d(input, output_size, return_indices=True)


# ---- convolution: ATen's general form ----------------------------------------------------------------------
_CONVS = {3: (conv1d, conv_transpose1d), 4: (conv2d, conv_transpose2d), 5: (conv3d, conv_transpose3d)}


def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """torch.convolution: batched input of the weight's rank; each of stride, padding, dilation and output_padding
    one int or one per spatial dim."""
    if weight.ndim not in _CONVS:
        raise ShapeError(f"convolution: expected a 3-, 4- or 5-dimensional weight, got {list(weight.shape)}")
    if input.ndim != weight.ndim:
        raise ShapeError(
            f"Expected {weight.ndim}-dimensional input for {weight.ndim}-dimensional weight {list(weight.shape)}, but "
            f"got {input.ndim}-dimensional input of size {list(input.shape)} instead"
        )
    dims = weight.ndim - 2
    args = {"stride": stride, "padding": padding, "dilation": dilation, "output_padding": output_padding}
    for name, value in args.items():
        if not isinstance(value, int) and len(value) not in (1, dims):
            raise ShapeError(
                f"expected {name} to be a single integer value or a list of {dims} values to match the convolution "
                f"dimensions, but got {name}={list(value)}"
            )
        args[name] = value if isinstance(value, int) or len(value) == dims else tuple(value) * dims
    conv, conv_t = _CONVS[weight.ndim]
    if transposed:
        return conv_t(input, weight, bias, args["stride"], args["padding"], args["output_padding"], groups,
                      args["dilation"])  # fmt: skip
    return conv(input, weight, bias, args["stride"], args["padding"], args["dilation"], groups)


# ---- RNN steps: (input, hx, w_ih, w_hh, b_ih, b_hh) -----------------------------------------------------------
def _projected(input, hx, w_ih, w_hh, b_ih, gates, state=""):
    """input·w_ihᵀ + b_ih, after torch's checks of the input, the state `hx` and the weights' sizes. ATen's
    step functions take a batch only (nn's cells add the batch dim of an unbatched input themselves)."""
    if input.ndim != 2:
        raise ShapeError(
            "Dimension out of range (expected to be in range of [-1, 0], but got 1): the step functions take a "
            f"batch, input (batch, input_size), got shape {tuple(input.shape)}"
        )
    hidden = w_hh.shape[1]
    if w_hh.shape[0] != gates * hidden:
        raise ShapeError(
            f"weight_hh first dim must be {gates} * hidden_size = {gates * hidden}, but got {w_hh.shape[0]}"
        )
    if input.shape[-1] != w_ih.shape[1]:
        raise ShapeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {w_ih.shape[1]}")
    for k, h in enumerate(hx):
        if input.shape[:-1] != h.shape[:-1]:
            raise ShapeError(f"Input batch size {input.shape[0]} doesn't match hidden{k} batch size {h.shape[0]}")
        if h.shape[-1] != hidden:
            raise ShapeError(f"hidden{k} has inconsistent hidden_size: got {h.shape[-1]}, expected {hidden}")
    return layers.linear(input, w_ih, b_ih)


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return recurrent.rnn_cell(_projected(input, (hx,), w_ih, w_hh, b_ih, 1), hx, w_hh, b_hh)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return recurrent.rnn_cell(_projected(input, (hx,), w_ih, w_hh, b_ih, 1), hx, w_hh, b_hh, relu=True)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h, c) after one step from the state hx = (h, c)."""
    if len(hx) != 2:
        raise ShapeError("lstm_cell expects two hidden states")
    return recurrent.lstm_cell(_projected(input, tuple(hx), w_ih, w_hh, b_ih, 4), tuple(hx), w_hh, b_hh)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return recurrent.gru_cell(_projected(input, (hx,), w_ih, w_hh, b_ih, 3), hx, w_hh, b_hh)


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
    out = loss.kl_div(input, target, reduction="none" if red == "mean" else red, log_target=log_target)
    return out.mean() if red == "mean" else out


def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    return loss.poisson_nll_loss(
        input, target, log_input, full, eps=eps, reduction=_reduction("poisson_nll_loss", reduction)
    )


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction=1):
    return loss.margin_ranking_loss(
        input1, input2, target, margin, reduction=_reduction("margin_ranking_loss", reduction)
    )


def hinge_embedding_loss(input, target, margin=1.0, reduction=1):
    return extra.hinge_embedding_loss(input, target, margin, reduction=_reduction("hinge_embedding_loss", reduction))


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=1):
    red = _reduction("cosine_embedding_loss", reduction)
    return distance.cosine_embedding_loss(input1, input2, target, margin, reduction=red)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction=1):
    red = _reduction("triplet_margin_loss", reduction)
    return distance.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction=red)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction=1, zero_infinity=False):
    red = _reduction("ctc_loss", reduction)
    return ctc.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, red, zero_infinity)


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction=1):
    red = _reduction("binary_cross_entropy_with_logits", reduction)
    return loss.binary_cross_entropy_with_logits(input, target, weight, reduction=red, pos_weight=pos_weight)


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
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "convolution",
    "cosine_embedding_loss",
    "cosine_similarity",
    "ctc_loss",
    "dropout",
    "dropout_",
    "embedding",
    "embedding_bag",
    "feature_alpha_dropout",
    "feature_alpha_dropout_",
    "feature_dropout",
    "feature_dropout_",
    "group_norm",
    "gru_cell",
    "hardshrink",
    "hinge_embedding_loss",
    "instance_norm",
    "kl_div",
    "layer_norm",
    "lstm_cell",
    "margin_ranking_loss",
    "max_pool1d",
    "max_pool1d_with_indices",
    "max_pool2d",
    "max_pool3d",
    "pairwise_distance",
    "pixel_shuffle",
    "pixel_unshuffle",
    "poisson_nll_loss",
    "prelu",
    "rms_norm",
    "rnn_relu_cell",
    "rnn_tanh_cell",
    "rrelu",
    "rrelu_",
    "selu",
    "selu_",
    "threshold",
    "threshold_",
    "triplet_margin_loss",
    *_NATIVE,
]
