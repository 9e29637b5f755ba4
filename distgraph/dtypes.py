"""dtypes with PyTorch's names and PyTorch's promotion rules, backed by numpy dtypes.

Promotion follows torch: the result category (bool < integer < floating) is the highest among all
operands; within it, dimensioned tensors decide before zero-dim tensors, which decide before Python
scalars (a numpy scalar counts as one); a Python float meeting only integer tensors gives the default dtype
(float32).
"""

import os

import numpy as np

from distgraph.errors import DTypeError


class DType:
    """A distgraph dtype: a name PyTorch users know and the numpy dtype that stores it."""

    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize", "category")

    def __init__(self, name, np_dtype, category):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category  # 0 bool, 1 integer, 2 floating
        self.is_floating_point = category == 2
        self.is_signed = category == 2 or np.issubdtype(self.np, np.signedinteger)
        self.itemsize = self.np.itemsize

    is_complex = False  # (torch's attribute: distgraph has no complex dtype)

    def __repr__(self):
        return f"distgraph.{self.name}"

    def __reduce__(self):
        return (from_any, (self.name,))


bool_ = DType("bool", np.bool_, 0)
uint8 = DType("uint8", np.uint8, 1)
int8 = DType("int8", np.int8, 1)
int16 = DType("int16", np.int16, 1)
int32 = DType("int32", np.int32, 1)
int64 = DType("int64", np.int64, 1)
float16 = DType("float16", np.float16, 2)
float32 = DType("float32", np.float32, 2)
float64 = DType("float64", np.float64, 2)

ALL = (bool_, uint8, int8, int16, int32, int64, float16, float32, float64)
_BY_NP = {d.np: d for d in ALL}
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update({"float": float32, "double": float64, "half": float16, "long": int64, "int": int32, "short": int16})

DEFAULT_DTYPE_VAR = "DISTGRAPH_DEFAULT_DTYPE"


def _default_from_environment():
    """float32, or the dtype named by DISTGRAPH_DEFAULT_DTYPE: Ray workers start with the driver's
    `set_default_dtype` this way (distributed/runtime.py sets it), so tensors they create, and the
    optimizers' rounding of their scalars to the default dtype, are those of the driver."""
    name = os.environ.get(DEFAULT_DTYPE_VAR)
    if not name:
        return float32
    dtype = _BY_NAME.get(name)
    if dtype is None or not dtype.is_floating_point:
        raise DTypeError(f"{DEFAULT_DTYPE_VAR}={name!r} is not a floating dtype (float16, float32, float64)")
    return dtype


_default_float = _default_from_environment()


def get_default_dtype():
    return _default_float


def set_default_dtype(dtype):
    global _default_float
    dtype = from_any(dtype)
    if not dtype.is_floating_point:
        raise DTypeError(f"set_default_dtype: {dtype} is not a floating dtype")
    _default_float = dtype


def from_numpy(np_dtype):
    """The DType of a numpy (or cupy) dtype; raises DTypeError for types distgraph does not hold."""
    try:
        return _BY_NP[np_dtype]
    except KeyError:
        try:
            return _BY_NP[np.dtype(np_dtype)]
        except (KeyError, TypeError):
            raise DTypeError(f"dtype {np_dtype} is not supported by distgraph") from None


def from_any(spec):
    """Accept a DType, a numpy dtype, a name ('float32', 'float') or a Python type."""
    if spec is None or isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        name = spec.removeprefix("torch.").removeprefix("distgraph.")
        if name in _BY_NAME:
            return _BY_NAME[name]
        raise DTypeError(f"unknown dtype name {spec!r}")
    if spec is float:
        return _default_float
    if spec is int:
        return int64
    if spec is bool:
        return bool_
    return from_numpy(spec)


def _category(np_dtype):
    kind = np_dtype.kind
    return 0 if kind == "b" else 2 if kind == "f" else 1


def promote_types(a, b):
    """torch.promote_types for two DTypes."""
    return from_numpy(_promote_np(a.np, b.np))


def _promote_np(a, b):
    if a == b:
        return a
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def result_np_dtype(operands):
    """The numpy dtype torch would give an op on `operands` (Tensors, arrays or Python scalars)."""
    tiers = [None, None, None]  # dimensioned, zero-dim, scalar: promoted dtype per tier
    for x in operands:
        arr = getattr(x, "array", x)
        if isinstance(arr, (bool, np.bool_)):  # a numpy number (np.generic) counts as the Python one, as in torch:
            dt, tier = np.dtype(np.bool_), 2  # int32 tensor + np.float64(0.5) is float32
        elif isinstance(arr, (int, np.integer)):
            dt, tier = np.dtype(np.int64), 2
        elif isinstance(arr, (float, np.floating)):
            dt, tier = _default_float.np, 2
        else:
            dt, tier = arr.dtype, (0 if arr.ndim else 1)
        tiers[tier] = dt if tiers[tier] is None else _promote_np(tiers[tier], dt)
    top = max(_category(t) for t in tiers if t is not None)
    for t in tiers:
        if t is not None and _category(t) == top:
            return t
    raise AssertionError("unreachable")
