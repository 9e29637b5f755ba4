"""torch's refusals of mixed dtypes: products, convolutions, normalizations and attention take operands of one
dtype, in torch's words, where elementwise ops promote (ops/promotion.py).

torch refuses `x32 @ w64` rather than computing it in float64: a float32 model fed numpy's float64 data would
otherwise run, twice as slow, in float64. matmul, linear, layer_norm and conv2d call these checks only off their
fast path, after one dtype comparison has found the operands differ; the others call them on every call, and
each returns after comparing the dtypes when they agree (autocast casts its inputs before the op, so they agree
there).
Each function raises DTypeError (a RuntimeError too, as torch's) naming the dtypes as torch's message does.
"""

import numpy as np

from distgraph import dtypes
from distgraph.errors import DTypeError

# torch's two spellings of a dtype: C++ type names (mm's message) and ScalarType names (kernels' checks)
_CPP = {
    "float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int", "int32": "int",
    "int16": "short int", "int8": "signed char", "uint8": "unsigned char", "bool": "bool",
    "complex64": "c10::complex<float>", "complex128": "c10::complex<double>",
}  # fmt: skip
_SCALAR = {
    "float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long", "int32": "Int", "int16": "Short",
    "int8": "Char", "uint8": "Byte", "bool": "Bool", "complex64": "ComplexFloat", "complex128": "ComplexDouble",
}  # fmt: skip


def cpp(t):
    name = t.array.dtype.name
    return _CPP.get(name, name)


def scalar(t):
    return scalar_name(t.array.dtype.name)


def scalar_name(dtype_name):
    """torch's ScalarType name of a dtype named `dtype_name` ("float32" → "Float")."""
    return _SCALAR.get(dtype_name, dtype_name)


def scalar_type(expected, found):
    """torch's kernels' check (bmm, conv, the normalizations' parameters)."""
    raise DTypeError(f"expected scalar type {scalar(expected)} but found {scalar(found)}")


def matmul(a, b):
    """matmul of Tensors a, b whose dtypes differ: raises, torch's message being that of the kernel its dims pick."""
    na, nb = a.array.ndim, b.array.ndim
    if na == 1 and nb == 1:
        raise DTypeError(f"dot : expected both vectors to have same dtype, but found {scalar(a)} and {scalar(b)}")
    if nb == 1:  # mv; torch's result (its `self`) takes the vector's dtype
        addmv(b, a, b)
    if nb == 2:  # mm (a 1-D a is lifted to a row, more dims are folded into rows)
        raise DTypeError(f"expected m1 and m2 to have the same dtype, but got: {cpp(a)} != {cpp(b)}")
    scalar_type(a, b)  # bmm


def addmm(input, mat1, mat2):
    """addmm, addbmm and linear with a bias (torch's addmm: input is its `self`)."""
    if input.array.dtype != mat2.array.dtype:
        raise DTypeError(f"self and mat2 must have the same dtype, but got {scalar(input)} and {scalar(mat2)}")
    if mat1.array.dtype != mat2.array.dtype:
        raise DTypeError(f"mat1 and mat2 must have the same dtype, but got {scalar(mat1)} and {scalar(mat2)}")


def addmv(input, mat, vec):
    if not input.array.dtype == mat.array.dtype == vec.array.dtype:
        raise DTypeError(
            f"addmv input tensors must have the same dtype, but got {scalar(input)}, {scalar(mat)}, and {scalar(vec)}"
        )


def baddbmm(input, batch1, batch2):
    if input.array.dtype != batch1.array.dtype:
        raise DTypeError(
            f"Input dtypes must be the same, got: input {cpp(input)}, batch1: {cpp(batch1)}, batch2: {cpp(batch2)}"
        )
    if batch1.array.dtype != batch2.array.dtype:
        scalar_type(batch1, batch2)


def linear(input, weight, bias):
    """F.linear of operands that are not all of one dtype: torch's addmm with a bias, its matmul without."""
    if bias is not None:
        addmm(bias, input, weight)
    elif input.array.dtype != weight.array.dtype:
        matmul(input, weight)  # (as input @ weight.T: the message reads only dims and dtypes)


def bilinear(input1, input2, weight, bias):
    named = {"input1": input1, "input2": input2, "weight": weight, "bias": bias}
    if len({t.array.dtype for t in named.values() if t is not None}) > 1:
        got = ", ".join(f"{k}: {cpp(t)}" for k, t in named.items() if t is not None)
        raise DTypeError(f"All tensors must have the same dtype, got {got}")


def conv(input, weight, bias=None, bias_words="type"):
    """conv1d/2d/3d and the transposed ones: weight's dtype must be input's, and bias's in the words torch's
    kernel uses (`bias_words` "type": conv1d/2d/3d, "scalar": conv_transpose3d; None: conv_transpose1d/2d,
    which cast the bias to the input's dtype)."""
    if weight.array.dtype != input.array.dtype:
        scalar_type(input, weight)
    if bias_words and bias is not None and bias.array.dtype != input.array.dtype:
        if bias_words == "scalar":
            scalar_type(input, bias)
        raise DTypeError(f"Input type ({cpp(input)}) and bias type ({cpp(bias)}) should be the same")


def norm(input, *params):
    """layer_norm, batch_norm, group_norm, instance_norm on CPU: the parameters (None skipped; the first
    given one sets their dtype) must share the input's dtype, except float32 parameters of a float16 input."""
    dt = input.array.dtype
    for p in params:  # the common case, every dtype the input's: a few comparisons
        if p is not None and p.array.dtype != dt:
            break
    else:
        return
    given = [p for p in params if p is not None]  # (not empty: the loop broke at one)
    if given[0].array.dtype != input.array.dtype:
        if any(p.array.dtype != np.float32 for p in given):
            raise DTypeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        if input.array.dtype != np.float16:
            raise DTypeError("mixed dtype (CPU): all inputs must share same datatype.")
        return
    for p in given[1:]:
        if p.array.dtype != input.array.dtype:
            scalar_type(input, p)


def einsum(specs, out_spec, operands):
    """torch's einsum contracts its operands left to right, a pair with a letter to sum of size > 1 on both
    sides through bmm (which refuses mixed dtypes) and any other pair through mul (which promotes; a letter of
    size 1 on a side is summed out of the other first): refuse where torch's bmm would."""
    if all(t.array.dtype == operands[0].array.dtype for t in operands):
        return
    left, dt = dict(zip(specs[0], operands[0].shape)), operands[0]  # the running product's letters: sizes
    for i in range(1, len(specs)):
        right = dict(zip(specs[i], operands[i].shape))
        summed = (left.keys() & right.keys()) - set(out_spec).union(*specs[i + 1 :])
        if operands[i].array.dtype != dt.array.dtype:
            if any(left[c] > 1 and right[c] > 1 for c in summed):
                scalar_type(dt, operands[i])
            dt = operands[i] if dtypes.result_np_dtype((dt, operands[i])) == operands[i].array.dtype else dt
        left = {c: max(left.get(c, 1), n) for c, n in (left | right).items() if c not in summed}
