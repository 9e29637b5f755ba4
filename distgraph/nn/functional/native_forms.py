"""ATen's "native" forms torch exposes at top level, which decompositions, exported graphs and ported kernels
call: each computes with the nn.functional op of the same job and adds the extra outputs ATen returns.

- native_layer_norm / native_group_norm / native_batch_norm return (output, mean, rstd): the statistics the
  normalization used, shaped as ATen's (layer norm: the input's leading dims then size-1 dims; group norm:
  (N, group); batch norm: (C,), or empty in eval mode). As torch's, the layer and batch norm statistics carry no
  graph and group norm's do (its mean and rstd are differentiable outputs in torch).
- native_dropout returns (output, keep-mask as bool); native_channel_shuffle is channel_shuffle.
- grid_sampler / grid_sampler_2d / grid_sampler_3d take ATen's int codes for the interpolation
  (0 bilinear, 1 nearest, 2 bicubic) and the padding (0 zeros, 1 border, 2 reflection); affine_grid_generator
  is affine_grid.
- conv_tbc: a 1-d convolution of a (time, batch, channel) input with a (width, in, out) weight, fairseq's layout.
- embedding_renorm_: the in-place renorm embedding(max_norm=...) applies to the rows it looks up.
- lstm / gru / rnn_tanh / rnn_relu: ATen's whole-sequence RNNs over a flat weight list (per layer and direction:
  w_ih, w_hh, then b_ih, b_hh when has_biases: an nn.LSTM's `_flat_weights` order), run by nn.RNNBase's own
  layer loop (`_FlatRNN` gives it the list as its weights). Returns (output, h_n) or, for lstm, (output, h_n, c_n).
"""

from distgraph import dtypes
from distgraph.autograd.grad_mode import no_grad
from distgraph.errors import InputRangeError, ShapeError
from distgraph.nn.functional import layers, pooling_extra, vision
from distgraph.nn.rnn import RNNBase
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.conv import conv1d
from distgraph.ops.creation import empty, ones, zeros
from distgraph.ops.layers import dropout_mask


def _mean_rstd(x, dims, eps):
    mean = red.mean(x, dim=dims, keepdim=True)
    var = red.mean(ew.square(ew.sub(x, mean)), dim=dims, keepdim=True)
    return mean, ew.rsqrt(ew.add(var, eps))


def native_layer_norm(input, normalized_shape, weight, bias, eps):
    shape = tuple(normalized_shape)
    if input.ndim < len(shape) or tuple(input.shape[input.ndim - len(shape) :]) != shape:
        raise ShapeError(
            f"native_layer_norm: Given normalized_shape={list(shape)}, expected input with shape [*, "
            f"{', '.join(map(str, shape))}], but got input of size{list(input.shape)}"
        )
    out = layers.layer_norm(input, shape, weight, bias, eps)
    with no_grad():
        mean, rstd = _mean_rstd(input, tuple(range(input.ndim - len(shape), input.ndim)), eps)
    return out, mean, rstd


def native_group_norm(input, weight, bias, N, C, HxW, group, eps):  # noqa: N803  (ATen's names)
    if C % group:
        raise ShapeError(
            "native_group_norm: Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(input.shape)} and num_groups={group}"
        )
    if input.numel() != N * C * HxW:
        raise ShapeError(
            f"native_group_norm: Expected X.numel() == N * C * HxW, got {input.numel()} elements for N={N}, C={C}, "
            f"HxW={HxW}"
        )
    out = layers.group_norm(input, group, weight, bias, eps)
    mean, rstd = _mean_rstd(input.reshape(N, group, (C // group) * HxW), (2,), eps)
    return out, mean.reshape(N, group), rstd.reshape(N, group)


def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    out = layers.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not training:
        return out, empty(0, dtype=input.dtype, device=input.device), empty(0, dtype=input.dtype, device=input.device)
    with no_grad():
        mean, rstd = _mean_rstd(input, (0, *range(2, input.ndim)), eps)
    return out, mean.reshape(-1), rstd.reshape(-1)


def native_dropout(input, p, train):
    if not 0 <= p <= 1:
        raise InputRangeError(f"native_dropout: bernoulli_ expects p to be in [0, 1], but got p={1 - p}")
    if not train or p == 0:
        return ew.mul(input, 1.0), ones(tuple(input.shape), dtype=dtypes.bool_, device=input.device)
    if p == 1:
        return ew.mul(input, 0.0), zeros(tuple(input.shape), dtype=dtypes.bool_, device=input.device)
    scaled = dropout_mask(input, p, input.shape, 1.0 / (1 - p))
    return ew.mul(input, scaled), scaled.ne(0)


def native_channel_shuffle(input, groups):
    return pooling_extra.channel_shuffle(input, groups)


_INTERPOLATION = ("bilinear", "nearest", "bicubic")
_PADDING = ("zeros", "border", "reflection")


def grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners):
    if interpolation_mode not in range(3) or padding_mode not in range(3):
        raise InputRangeError(
            f"grid_sampler: interpolation_mode must be 0, 1 or 2 (bilinear, nearest, bicubic) and padding_mode 0, 1 "
            f"or 2 (zeros, border, reflection), got {interpolation_mode} and {padding_mode}"
        )
    mode, padding = _INTERPOLATION[interpolation_mode], _PADDING[padding_mode]
    return vision.grid_sample(input, grid, mode, padding, align_corners)


def _grid_sampler_of(ndim):
    def sampler(input, grid, interpolation_mode, padding_mode, align_corners):
        if input.ndim != ndim or grid.ndim != ndim:
            raise ShapeError(
                f"grid_sampler(): expected {ndim}D input and grid with same number of dimensions, but got input with "
                f"sizes {list(input.shape)} and grid with sizes {list(grid.shape)}"
            )
        return grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)

    sampler.__name__ = sampler.__qualname__ = f"grid_sampler_{ndim - 2}d"
    return sampler


grid_sampler_2d, grid_sampler_3d = _grid_sampler_of(4), _grid_sampler_of(5)


def affine_grid_generator(theta, size, align_corners):
    return vision.affine_grid(theta, list(size), align_corners)


def conv_tbc(input, weight, bias, pad=0):
    """(time, batch, in) input, (width, in, out) weight, (out,) bias -> (time', batch, out)."""
    if input.ndim != 3:
        raise ShapeError(f"conv_tbc: Input must have 3 dims: time, batch, in_channel (got {list(input.shape)})")
    if weight.ndim != 3:
        raise ShapeError(f"conv_tbc: Weight tensor must have 3 dims: kernel_width, in_channels, out_channels (got {list(weight.shape)})")  # fmt: skip
    if input.shape[2] != weight.shape[1]:
        raise ShapeError(
            f"conv_tbc: Input dim 2 (input channels) is not == dim 1 in the weight tensor ({input.shape[2]} vs "
            f"{weight.shape[1]})"
        )
    if bias.ndim != 1 or bias.shape[0] != weight.shape[2]:
        raise ShapeError(
            f"conv_tbc: Bias size must equal dim 2 in the weight tensor (output channels): bias {list(bias.shape)}, "
            f"weight {list(weight.shape)}"
        )
    out = conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=pad)  # (batch, out, time')
    return out.permute(2, 0, 1)


def embedding_renorm_(input, indices, max_norm, norm_type):
    layers._embedding_renorm_(input, indices.reshape(-1), max_norm, norm_type)
    return input


class _FlatRNN:
    """What RNNBase._layers reads of its module, for ATen's flat weight list (no projections)."""

    proj_size = 0

    def __init__(self, mode, params, has_biases, num_layers, dropout, train, bidirectional):
        per, dirs = 4 if has_biases else 2, 2 if bidirectional else 1
        if len(params) != per * num_layers * dirs:
            raise ShapeError(
                f"{mode.lower()}: got an incorrect number of RNN parameters ({len(params)} for {num_layers} layer(s), "
                f"{dirs} direction(s), has_biases={has_biases}: expected {per * num_layers * dirs})"
            )
        self.mode, self.params, self.bias, self.num_layers = mode, list(params), has_biases, num_layers
        self.dropout, self.training, self.bidirectional = dropout, train, bidirectional
        self.hidden_size = params[1].shape[1]  # w_hh: (gates * H, H)

    def _weights(self, layer, d):
        per = 4 if self.bias else 2
        start = (layer * (2 if self.bidirectional else 1) + d) * per
        w = self.params[start : start + per]
        return (w[0], w[1], w[2], w[3]) if self.bias else (w[0], w[1], None, None)


def _aten_rnn(mode, input, h0, c0, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    if input.ndim != 3:
        raise ShapeError(f"{mode.lower()}: expected a 3-D input (L, N, In), or (N, L, In) batch first, got {tuple(input.shape)}")  # fmt: skip
    flat = _FlatRNN(mode, params, has_biases, num_layers, dropout, train, bidirectional)
    x = input.transpose(0, 1) if batch_first else input  # (L, N, In)
    out, h_n, c_n = RNNBase._layers(flat, x, h0, c0)
    return out.transpose(0, 1) if batch_first else out, h_n, c_n


def lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    h0, c0 = hx
    return _aten_rnn("LSTM", input, h0, c0, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def _rnn_of(mode, name):
    def run(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        out, h_n, _ = _aten_rnn(mode, input, hx, None, params, has_biases, num_layers, dropout, train, bidirectional,
                                batch_first)  # fmt: skip
        return out, h_n

    run.__name__ = run.__qualname__ = name
    return run


gru, rnn_tanh, rnn_relu = _rnn_of("GRU", "gru"), _rnn_of("RNN_TANH", "rnn_tanh"), _rnn_of("RNN_RELU", "rnn_relu")

__all__ = ["native_layer_norm", "native_group_norm", "native_batch_norm", "native_dropout", "native_channel_shuffle",
           "grid_sampler", "grid_sampler_2d", "grid_sampler_3d", "affine_grid_generator", "conv_tbc",
           "embedding_renorm_", "lstm", "gru", "rnn_tanh", "rnn_relu"]  # fmt: skip
