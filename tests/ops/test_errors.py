"""Bad input: every case raises a distgraph error that is also the matching builtin (so `except
ValueError` code written for torch/numpy keeps working) and whose message names the op and the
shapes, dims, dtypes or devices involved. One row per case."""

import numpy as np
import pytest

import distgraph as dg
from distgraph import errors

F = dg.nn.functional

CASES = [
    # shape mismatch
    ("add-broadcast", lambda: dg.ones(2, 3) + dg.ones(4), errors.ShapeError, ValueError, ["add", "(2, 3)", "(4,)"]),
    ("mul-broadcast", lambda: dg.ones(2, 3) * dg.ones(3, 2), errors.ShapeError, ValueError, ["mul", "(2, 3)", "(3, 2)"]),
    ("where-broadcast", lambda: dg.where(dg.ones(2) > 0, dg.ones(3), dg.ones(2)), errors.ShapeError, ValueError, ["where"]),
    ("matmul-inner", lambda: dg.ones(2, 3) @ dg.ones(2, 3), errors.ShapeError, ValueError, ["matmul", "2x3", "2x3"]),
    ("matmul-0d", lambda: dg.ones(()) @ dg.ones(2), errors.ShapeError, ValueError, ["matmul", "()"]),
    ("bmm-batch", lambda: dg.bmm(dg.ones(2, 3, 4), dg.ones(3, 4, 5)), errors.ShapeError, ValueError, ["bmm", "(2, 3, 4)"]),
    ("reshape-size", lambda: dg.ones(3, 4).reshape(5, 2), errors.ShapeError, ValueError, ["reshape", "[5, 2]", "12"]),
    ("view-two-minus1", lambda: dg.ones(4).view(-1, -1), errors.ShapeError, ValueError, ["-1"]),
    ("cat-shapes", lambda: dg.cat([dg.ones(2, 3), dg.ones(2, 4)]), errors.ShapeError, ValueError, ["cat", "3", "4"]),
    ("cat-empty-list", lambda: dg.cat([]), errors.ShapeError, ValueError, ["cat"]),
    ("stack-shapes", lambda: dg.stack([dg.ones(2), dg.ones(3)]), errors.ShapeError, ValueError, ["stack", "(2,)", "(3,)"]),
    ("expand", lambda: dg.ones(3, 2).expand(3, 4), errors.ShapeError, ValueError, ["expand", "4", "2"]),
    ("einsum-operands", lambda: dg.einsum("ij,jk", dg.ones(2, 2)), errors.ShapeError, ValueError, ["einsum"]),
    ("einsum-sizes", lambda: dg.einsum("ij,jk", dg.ones(2, 3), dg.ones(4, 2)), errors.ShapeError, ValueError, ["einsum", "(4, 2)"]),
    ("gather-ndim", lambda: dg.gather(dg.ones(2, 3), 1, dg.tensor([0])), errors.ShapeError, ValueError, ["gather"]),
    ("pad-odd", lambda: F.pad(dg.ones(2, 3), (1,)), errors.ShapeError, ValueError, ["pad"]),
    ("pad-reflect-too-big", lambda: F.pad(dg.ones(2, 3), (3, 0), mode="reflect"), errors.ShapeError, ValueError, ["pad", "reflect", "(2, 3)"]),
    ("inplace-broadcast", lambda: dg.ones(3).add_(dg.ones(2, 3)), errors.ShapeError, ValueError, ["add_", "(3,)", "(2, 3)"]),
    ("linear-features", lambda: F.linear(dg.ones(2, 3), dg.ones(4, 5)), errors.ShapeError, ValueError, ["linear", "3", "(4, 5)"]),
    ("amax-empty", lambda: dg.amax(dg.ones(0, 3), 0), errors.ShapeError, ValueError, ["amax", "(0, 3)"]),
    ("view-non-contiguous", lambda: dg.ones(2, 3).T.view(6), errors.ShapeError, ValueError, ["view", "[6]", "(3, 2)", "reshape"]),
    ("ragged-list", lambda: dg.tensor([[1, 2], [3]]), errors.ShapeError, ValueError, ["tensor()", "dimension 1"]),
    ("negative-size", lambda: dg.randn(-1, 2), errors.ShapeError, ValueError, ["negative dimension", "[-1, 2]"]),
    ("negative-size-zeros", lambda: dg.zeros(2, -3), errors.ShapeError, ValueError, ["negative dimension", "[2, -3]"]),
    ("bce-above-1", lambda: F.binary_cross_entropy(dg.tensor([0.5, 1.5]), dg.tensor([1.0, 0.0])), errors.InputRangeError, ValueError, ["binary_cross_entropy", "[0, 1]", "(2,)", "1.5"]),
    ("bce-nan", lambda: F.binary_cross_entropy(dg.tensor([float("nan")]), dg.tensor([1.0])), errors.InputRangeError, ValueError, ["binary_cross_entropy", "[0, 1]"]),
    ("floordiv-by-zero", lambda: dg.tensor([[1, 2]]) // dg.tensor([0, 1]), errors.DivisionByZeroError, ZeroDivisionError, ["floor_divide", "(1, 2)", "int64", "(2,)"]),
    ("mod-by-zero", lambda: dg.tensor([1, 2]) % 0, errors.DivisionByZeroError, ZeroDivisionError, ["remainder", "(2,)", "int64"]),
    ("fmod-by-zero", lambda: dg.fmod(dg.tensor([1, 2]), dg.tensor([1, 0])), errors.DivisionByZeroError, ZeroDivisionError, ["fmod"]),
    ("trunc-div-by-zero", lambda: dg.div(dg.tensor([1]), 0, rounding_mode="trunc"), errors.DivisionByZeroError, ZeroDivisionError, ["div"]),
    ("conv-stride-0", lambda: F.conv2d(dg.ones(1, 1, 5, 5), dg.ones(1, 1, 3, 3), stride=0), errors.ShapeError, ValueError, ["conv2d", "stride", "positive"]),
    ("conv-negative-padding", lambda: F.conv2d(dg.ones(1, 1, 5, 5), dg.ones(1, 1, 3, 3), padding=-1), errors.ShapeError, ValueError, ["conv2d", "padding", "≥ 0"]),
    ("conv-groups-0", lambda: F.conv2d(dg.ones(1, 2, 5, 5), dg.ones(2, 2, 3, 3), groups=0), errors.ShapeError, ValueError, ["conv2d", "groups", "0"]),
    ("pool-kernel-0", lambda: F.max_pool2d(dg.ones(1, 1, 4, 4), 0), errors.ShapeError, ValueError, ["max_pool2d", "kernel_size"]),
    # bad dim
    ("sum-dim", lambda: dg.ones(2, 3).sum(5), errors.ShapeError, ValueError, ["sum", "[-2, 1]", "5"]),
    ("softmax-dim", lambda: dg.softmax(dg.ones(2, 3), -3), errors.ShapeError, ValueError, ["softmax", "-3"]),
    ("transpose-dim", lambda: dg.ones(2, 3).transpose(0, 2), errors.ShapeError, ValueError, ["transpose", "2"]),
    ("permute-dims", lambda: dg.ones(2, 3).permute(0, 0), errors.ShapeError, ValueError, ["permute"]),
    ("cat-dim", lambda: dg.cat([dg.ones(2), dg.ones(2)], 1), errors.ShapeError, ValueError, ["cat", "1"]),
    ("repeated-dim", lambda: dg.ones(2, 3).mean((0, 0)), errors.ShapeError, ValueError, ["mean", "multiple"]),
    ("squeeze-dim", lambda: dg.ones(2, 3).squeeze(4), errors.ShapeError, ValueError, ["squeeze", "4"]),
    ("argmax-dim", lambda: dg.ones(2, 3).argmax(2), errors.ShapeError, ValueError, ["argmax", "2"]),
    # dtype mismatch
    ("requires-grad-int", lambda: dg.tensor([1, 2]).requires_grad_(), errors.DTypeError, TypeError, ["int64"]),
    ("masked-fill-float-mask", lambda: dg.ones(2).masked_fill(dg.ones(2), 0), errors.DTypeError, TypeError, ["masked_fill", "float32"]),
    ("index-float-tensor", lambda: dg.ones(3)[dg.ones(1)], errors.IndexOutOfRangeError, IndexError, ["getitem", "float32"]),
    ("gather-float-index", lambda: dg.gather(dg.ones(2, 2), 1, dg.ones(2, 2)), errors.DTypeError, TypeError, ["gather", "float32"]),
    ("inplace-float-into-int", lambda: dg.tensor([1]).mul_(0.5), errors.DTypeError, TypeError, ["mul_", "float32", "int64"]),
    ("mean-of-int", lambda: dg.tensor([1, 2]).mean(), errors.DTypeError, TypeError, ["mean", "int64"]),
    ("unknown-dtype", lambda: dg.zeros(2, dtype="complex64"), errors.DTypeError, TypeError, ["complex64"]),
    ("operand-type", lambda: dg.ones(2) * "x", errors.DTypeError, TypeError, ["Tensor", "str"]),
    ("operand-type-reflected", lambda: [1] + dg.ones(2), errors.DTypeError, TypeError, ["list", "Tensor"]),
    # index out of range
    ("int-index", lambda: dg.ones(3, 4)[5], errors.IndexOutOfRangeError, IndexError, ["5", "dimension 0", "size 3"]),
    ("int-index-dim1", lambda: dg.ones(3, 4)[0, -5], errors.IndexOutOfRangeError, IndexError, ["-5", "dimension 1", "4"]),
    ("too-many-indices", lambda: dg.ones(3)[0, 0], errors.IndexOutOfRangeError, IndexError, ["too many indices", "1"]),
    ("int-array-index", lambda: dg.ones(3, 4)[dg.tensor([0, 3])], errors.IndexOutOfRangeError, IndexError, ["3", "size 3"]),
    ("bool-mask-shape", lambda: dg.ones(3, 4)[dg.tensor([True, False])], errors.IndexOutOfRangeError, IndexError, ["getitem"]),
    ("gather-index", lambda: dg.gather(dg.ones(3, 4), 1, dg.tensor([[7]])), errors.IndexOutOfRangeError, IndexError, ["gather", "7"]),
    ("index_select", lambda: dg.index_select(dg.ones(3, 4), 0, dg.tensor([3])), errors.IndexOutOfRangeError, IndexError, ["index_select", "3"]),
    ("scatter_add-index", lambda: dg.scatter_add(dg.ones(2, 2), 1, dg.tensor([[2]]), dg.ones(1, 1)), errors.IndexOutOfRangeError, IndexError, ["scatter_add"]),
    ("one_hot-class", lambda: F.one_hot(dg.tensor([3]), 3), errors.IndexOutOfRangeError, IndexError, ["one_hot", "3"]),
    ("embedding-index", lambda: F.embedding(dg.tensor([5]), dg.ones(4, 2)), errors.IndexOutOfRangeError, IndexError, ["embedding", "5"]),
    ("setitem-index", lambda: dg.ones(3).__setitem__(3, 1.0), errors.IndexOutOfRangeError, IndexError, ["3", "size 3"]),
    ("topk-k", lambda: dg.ones(3).topk(4), errors.IndexOutOfRangeError, IndexError, ["topk", "4", "size 3"]),
    # autograd misuse
    ("backward-nonscalar", lambda: (dg.ones(2, requires_grad=True) * 2).backward(), errors.AutogradError, RuntimeError, ["scalar outputs", "(2,)"]),
    ("backward-no-grad", lambda: dg.ones(2).sum().backward(), errors.AutogradError, RuntimeError, ["does not require grad"]),
    ("grad-shape", lambda: (dg.ones(2, requires_grad=True) * 2).backward(dg.ones(3)), errors.ShapeError, ValueError, ["(3,)", "(2,)"]),
    ("item-many", lambda: dg.ones(2).item(), errors.AutogradError, RuntimeError, ["2 elements"]),
    ("bool-many", lambda: bool(dg.ones(2)), errors.AutogradError, RuntimeError, ["ambiguous"]),
]  # fmt: skip


@pytest.mark.parametrize("call,error,builtin,words", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_raises_distgraph_error_naming_op_and_shapes(call, error, builtin, words):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, builtin) and isinstance(info.value, errors.DistgraphError)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_device_mismatch_and_missing_cuda_are_runtime_errors_naming_devices():
    if dg.cuda_is_available():
        with pytest.raises(errors.DeviceError, match="cuda.*cpu|cpu.*cuda"):
            dg.ones(2) + dg.ones(2, device="cuda")
        return
    with pytest.raises(errors.DeviceError) as info:
        dg.ones(2, device="cuda")
    msg = str(info.value).lower()
    assert isinstance(info.value, RuntimeError) and ("cupy" in msg or "gpu" in msg)
    with pytest.raises(errors.DeviceError, match="cuda:x|device"):
        dg.device("cuda:x")
    with pytest.raises(errors.DeviceError, match="tpu"):
        dg.ones(2, device="tpu")


def test_errors_keep_the_original_cause():
    with pytest.raises(errors.ShapeError) as info:
        dg.ones(2, 3) + dg.ones(4)
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, ValueError)
    assert np.ones(1).shape == (1,)  # numpy itself unaffected (no global patching)
