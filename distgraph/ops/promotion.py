"""Operand handling for elementwise ops: torch's dtype promotion of two operands (Python scalars
become 0-d constants of the promoted dtype) and the differentiable cast op.

Kept apart from elementwise.py, which applies the rules: every binary op, comparison and loss calls
`_operands` first, so these few functions are the one place where torch's promotion table lives
(dtypes.result_np_dtype computes it).
"""

import numpy as np

from distgraph import dtypes
from distgraph.autograd import memory_format
from distgraph.autograd.tensor import TENSOR_TYPES, Tensor
from distgraph.backend import on
from distgraph.errors import DTypeError
from distgraph.ops.registry import defop

EW = "elementwise"


# ---- operand handling -------------------------------------------------------------------------
def const(value, like, np_dtype=None):
    """A 0-d (or array) constant on `like`'s device, without grad: on a GPU made on that GPU (cupy makes an
    array on its current one), so `x * 2` on cuda:1 does not mix GPUs."""
    dev = like.device
    dt = np_dtype or like.array.dtype
    if type(value) is int and np.dtype(dt).kind in "iu":
        value = _wrapped(value, np.dtype(dt))
    if dev.index is None:  # cpu (the one test it pays)
        return Tensor(np.asarray(value, dtype=dt), device=dev)
    with on(dev):
        return Tensor(dev.xp.asarray(value, dtype=dt), device=dev)


def _wrapped(value, dt):
    """A Python int outside an integer dtype's range, wrapped into it modulo 2**bits, as torch does for
    `uint8_tensor + 300` (300 becomes 44); numpy raised OverflowError. Beyond 64 bits stays an error."""
    info = np.iinfo(dt)
    if info.min <= value <= info.max:
        return value
    return np.asarray(value, dtype=np.uint64 if value >= 0 else np.int64).astype(dt)


def _operands(a, b, op=None):
    """Two Tensors of torch's promoted dtype; Python scalars become 0-d constants. `op` "sub" refuses a
    bool operand as torch does (a bool would promote away and be subtracted as 0/1)."""
    if type(a) in TENSOR_TYPES and type(b) in TENSOR_TYPES and a.array.dtype == b.array.dtype:
        return a, b
    if op == "sub" and any(type(x) is bool or (isinstance(x, Tensor) and x.array.dtype == np.bool_) for x in (a, b)):
        kinds = [f"{x.array.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__ for x in (a, b)]
        raise DTypeError(
            f"sub: Subtraction, the `-` operator, with a bool tensor is not supported (operands {kinds[0]} and "
            f"{kinds[1]}). If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if (type(b) is float or type(b) is int) and type(a) in TENSOR_TYPES and a.array.dtype.kind == "f":
        return a, const(b, a)  # the common `x * 2.0`: a Python number takes a float tensor's dtype
    a_is, b_is = isinstance(a, Tensor), isinstance(b, Tensor)
    if not (a_is or b_is):
        raise TypeError(f"expected a Tensor operand, got {type(a).__name__} and {type(b).__name__}")
    if a_is and isinstance(b, np.ndarray):
        return _operands(a, const(b, a, b.dtype))
    if b_is and isinstance(a, np.ndarray):
        return _operands(const(a, b, a.dtype), b)
    if a_is and b_is:
        if a.array.dtype == b.array.dtype:
            return a, b
        dt = dtypes.result_np_dtype((a, b))
        return (a if a.array.dtype == dt else cast(a, dt)), (b if b.array.dtype == dt else cast(b, dt))
    scalar = b if a_is else a
    if not isinstance(scalar, int | float | np.number | np.bool_):
        names = [type(a).__name__, type(b).__name__]
        raise DTypeError(f"unsupported operand types for a tensor op: {names[0]} and {names[1]}")
    if b_is:  # a is a Python scalar
        dt = dtypes.result_np_dtype((b, a))
        b = b if b.array.dtype == dt else cast(b, dt)
        return const(a, b, dt), b
    dt = dtypes.result_np_dtype((a, b))
    a = a if a.array.dtype == dt else cast(a, dt)
    return a, const(b, a, dt)


def _float_operands(a, b):
    """Two Tensors for an op whose result is floating (true division, atan2): torch's promoted dtype, or the
    default float dtype where that would be bool/integer. Tensors turn float before a number meets them, so
    uint8 / 256 divides by 256.0 (not by 256 wrapped into uint8, 0) and atan2(uint8, tensor(-1)) by -1.0."""
    if not (isinstance(a, Tensor) and a.array.dtype.kind == "f" or isinstance(b, Tensor) and b.array.dtype.kind == "f"):
        a = _float_operand(a) if isinstance(a, Tensor) else a
        b = _float_operand(b) if isinstance(b, Tensor) else b
    return _operands(a, b)


def refuse(error, op, x, what):
    """Raise `error` for an input `op` does not take, as torch refuses it: names the op, dtype and shape."""
    raise error(f"{op}: {what} (a {x.array.dtype} tensor of shape {tuple(x.shape)})")


def _float_operand(x):
    """Integer/bool inputs of float-valued functions (exp, sin, ...) become the default float dtype."""
    return x if x.array.dtype.kind == "f" else cast(x, dtypes.get_default_dtype())


# ---- cast ---------------------------------------------------------------------------------------
@defop("cast", kind=EW, save=())
def _cast(xp, x, dtype):
    """Laid out as torch's (preserve_format: autograd/memory_format.py); numpy's order K agrees but for an
    expanded input (a 0 stride), which it would make column-major where torch keeps row-major."""
    return memory_format.like(xp, x.astype(dtype), x)


@_cast.grad
def _(ctx, g):
    x = ctx.inputs[0]
    return cast(g, x.array.dtype) if x.array.dtype.kind == "f" else None


_cast.array_grad(lambda ctx, g: g.astype(ctx.inputs[0].array.dtype) if ctx.inputs[0].array.dtype.kind == "f" else None)


def cast(x, dtype):
    np_dtype = dtype.np if isinstance(dtype, dtypes.DType) else np.dtype(dtype)
    out = _cast(x, dtype=np_dtype)
    if np_dtype.kind != "f" and out.requires_grad:  # as torch: integer/bool tensors never require grad
        out._own_requires_grad, out.grad_fn = False, None
    return out
