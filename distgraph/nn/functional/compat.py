"""torch.nn.functional's forms written on top of others: the deprecated upsample family (interpolate with
torch's warning), linear_cross_entropy (linear then cross_entropy, torch's reference path), conv_tbc (conv1d
over time-batch-channel input) and torch's aliases pdist and native_channel_shuffle."""

import math
import warnings

from distgraph.errors import ConfigError, ShapeError
from distgraph.nn.functional.layers import linear
from distgraph.nn.functional.loss import cross_entropy
from distgraph.nn.functional.pooling_extra import channel_shuffle
from distgraph.ops.conv import conv1d
from distgraph.ops.namespace_extra import pdist  # noqa: F401  (torch.nn.functional.pdist is torch.pdist)
from distgraph.ops.resample import interpolate

native_channel_shuffle = channel_shuffle  # torch's kernel name for the same shuffle


def _deprecated(name):
    warnings.warn(f"`nn.functional.{name}` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=3)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated: interpolate(input, size, scale_factor, mode, align_corners), with torch's warning."""
    _deprecated("upsample")
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """Deprecated: interpolate(..., mode="nearest"), with torch's warning."""
    _deprecated("upsample_nearest")
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """Deprecated: interpolate(..., mode="bilinear", align_corners=True), with torch's warning."""
    _deprecated("upsample_bilinear")
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, options=None):  # fmt: skip
    """cross_entropy(linear(input, linear_weight, linear_bias), target, ...): input (in,) or (N, in); weight
    (C, in) or (C, d1..dK, in) for a K-dimensional loss (then the logits are (N, C, d1..dK)). ignore_index
    None means -100 and must stay None for class-probability targets, as torch's. `options` picks torch's
    chunked kernel (less memory, the same values); distgraph has only the reference path, so it must be None."""
    if options is not None:
        raise ConfigError(
            "linear_cross_entropy: options (torch's chunked path) is not supported; distgraph computes the "
            "reference path, options=None"
        )
    if input.ndim < 1 or input.ndim > 2:
        raise ShapeError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise ShapeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.ndim}")
    batch, in_features = tuple(input.shape[:-1]), input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise ShapeError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {in_features} and {linear_weight.shape[-1]}, respectively"
        )
    num_classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise ShapeError(f"expected linear_bias shape {(num_classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise ShapeError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires batched input, "
            f"(N, {in_features}), got unbatched input with shape {tuple(input.shape)}"
        )
    logits_shape = (*batch, num_classes, *out_features)
    if tuple(target.shape) == logits_shape and ignore_index is not None:
        raise ConfigError("ignore_index cannot be specified when target contains probabilities")
    if out_features:
        rows = math.prod(out_features, start=num_classes)
        linear_weight = linear_weight.reshape(rows, in_features)
        linear_bias = None if linear_bias is None else linear_bias.reshape(rows)
    logits = linear(input, linear_weight, linear_bias).reshape(logits_shape)
    return cross_entropy(
        logits,
        target,
        weight,
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def conv_tbc(input, weight, bias, pad=0):
    """A 1-d convolution over (time, batch, in_channels) input with a (kernel_width, in_channels, out_channels)
    weight, padded by `pad` steps on both ends of time: (time', batch, out_channels). torch's messages."""
    if input.ndim != 3:
        raise ShapeError("Input must have 3 dims: time, batch, in_channel")
    if weight.ndim != 3:
        raise ShapeError("Weight tensor must have 3 dims: kernel_width, in_channels, out_channels.")
    if bias.ndim != 1:
        raise ShapeError("Bias must be 1-D")
    if input.shape[2] != weight.shape[1]:
        raise ShapeError("Input dim 2 (input channels) is not == dim 1 in the weight tensor")
    if weight.shape[2] != bias.shape[0]:
        raise ShapeError("Bias size must equal dim 2 in the weight tensor (output channels).")
    out = conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=pad)  # (B, C_out, T')
    return out.permute(2, 0, 1)
