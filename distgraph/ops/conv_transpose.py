"""Transposed convolution: conv_transpose2d (conv_transpose1d is it with height 1), torch's arguments.

A transposed convolution is the input gradient of a convolution, so it is `conv2d_input_grad`
applied to the input with the transposed layer's weight (C_in, C_out/groups, kh, kw), which is laid
out as a conv2d weight (O = C_in, C/g = C_out/groups). That op's derivatives are conv2d and
conv2d_weight_grad, so gradients of every order come with it and no second col2im exists.

The output size is (H - 1)·stride - 2·padding + dilation·(k - 1) + output_padding + 1. When
output_padding < stride the conv2d that maps this size back gives exactly H, and the op runs with
the padding as is. torch also accepts stride ≤ output_padding < dilation; there the extra rows would
break that round trip, so the full, unpadded output is computed and then cropped (and zero-extended
where output_padding exceeds padding) with F.pad.
"""

from distgraph.autograd.formats import channels_last
from distgraph.autograd.function import apply
from distgraph.errors import ShapeError
from distgraph.ops import same_dtype
from distgraph.ops.autocast import autocast_op
from distgraph.ops.conv import (
    _conv2d_input_grad,
    _pair,
    batch_optional,
    check_bias,
    check_ranks_and_groups,
    layout,
    ntuple,
)
from distgraph.ops.promotion import cast
from distgraph.ops.regions import pad


def _as_input(bias, input):
    """torch's conv_transpose1d/2d cast a bias of another dtype to the input's (conv_transpose3d refuses it)."""
    return bias if bias.array.dtype == input.array.dtype else cast(bias, input.array.dtype)


def _out_size(size, k, stride, padding, dilation, output_padding):
    return (size - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1


@batch_optional(4)
@autocast_op("conv_transpose2d")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d: input (N, C_in, H, W) or (C_in, H, W), weight (C_in, C_out/groups, kh, kw)."""
    check_ranks_and_groups("conv_transpose2d", input, weight, groups)
    if weight.array.dtype != input.array.dtype:
        same_dtype.conv(input, weight, bias, None)  # torch's words (a bias of another dtype is cast, below)
    n, c, h, w = input.shape
    ci, cg, kh, kw = weight.shape
    if ci != c or c % groups:
        raise ShapeError(
            f"conv_transpose2d: input {tuple(input.shape)} with groups={groups} needs weight ({c}, C_out/groups, kh, "
            f"kw) with {c} divisible by groups, got weight {tuple(weight.shape)}"
        )
    op = "conv_transpose2d"
    stride, dilation = _pair(stride, "stride", op), _pair(dilation, "dilation", op)
    padding, extra = _pair(padding, "padding", op), _pair(output_padding, "padding", op)
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
        raise ShapeError(
            f"conv_transpose2d: output_padding {extra} must be smaller than either stride {stride} or dilation "
            f"{dilation} in each dim"
        )
    size = tuple(_out_size(*a) for a in zip((h, w), (kh, kw), stride, padding, dilation, extra))
    if min(size) <= 0:
        raise ShapeError(
            f"conv_transpose2d: input {tuple(input.shape)} with kernel {(kh, kw)}, stride {stride}, padding {padding}, "
            f"dilation {dilation} and output_padding {extra} gives output size {size}, which is too small"
        )
    attrs = {"stride": stride, "dilation": dilation, "groups": groups, **layout(input, weight)}
    if all(e < s for e, s in zip(extra, stride)):
        out = apply(_conv2d_input_grad, (input, weight), {**attrs, "padding": padding, "input_shape": (n, cg * groups, *size)})  # fmt: skip
    else:
        full = tuple(_out_size(sz, k, s, 0, d, 0) for sz, k, s, d in zip((h, w), (kh, kw), stride, dilation))
        out = apply(_conv2d_input_grad, (input, weight), {**attrs, "padding": (0, 0), "input_shape": (n, cg * groups, *full)})  # fmt: skip
        out = pad(out, (-padding[1], size[1] + padding[1] - full[1], -padding[0], size[0] + padding[0] - full[0]))
        if "channels_last" in attrs:  # (pad's result is row-major)
            out = out.contiguous(memory_format=channels_last)
    if bias is not None:
        check_bias("conv_transpose2d", bias, weight, cg * groups)
        out = out + _as_input(bias, input).reshape(1, -1, 1, 1)
    return out


@batch_optional(3)
@autocast_op("conv_transpose1d")
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose1d: input (N, C_in, L) or (C_in, L), weight (C_in, C_out/groups, k)."""
    if input.ndim != 3 or weight.ndim != 3:
        raise ShapeError(
            f"conv_transpose1d: expected 2-D or 3-D input and 3-D weight, got input {tuple(input.shape)} and weight "
            f"{tuple(weight.shape)}"
        )
    op = "conv_transpose1d"
    check_bias(op, bias, weight, weight.shape[1] * groups)
    (s,), (d,) = ntuple(stride, 1, "stride", op), ntuple(dilation, 1, "dilation", op)
    (p,), (e,) = ntuple(padding, 1, "padding", op), ntuple(output_padding, 1, "output_padding", op)
    out = conv_transpose2d(input.unsqueeze(2), weight.unsqueeze(2), None, (1, s), (0, p), (0, e), groups, (1, d))
    out = out.squeeze(2)
    if bias is not None:
        out = out + _as_input(bias, input).reshape(1, -1, 1)
    return out
