"""Tensor methods torch has beyond the op table: in-place cumulative ops, renorm and fill_diagonal_,
apply_/map_ (a Python callable per element), new_empty_strided, the random fills of the other
distributions (random_, exponential_, cauchy_, geometric_, log_normal_), the dtype shorthands (float,
long, byte, ... and the legacy type(); bfloat16 refused: numpy has no such dtype) and metadata (H, mH, mT, adjoint, get_device,
itemsize, is_cpu). Not offered: values()/indices() (sparse tensors only, torch raises on dense ones) and index()
(functorch's first-class dims).

A random fill on a tensor that requires grad is recorded as torch records it (ExponentialBackward...):
the old value gets a zero gradient, by the same path fill_ takes (methods.inplace_variant of an
overwrite), so a leaf, or a view of one, is refused as torch refuses it.
"""

import numpy as np

from distgraph import dtypes
from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import on_its_device
from distgraph.errors import AutogradError, DeviceError, DTypeError, InputRangeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import products, rng, shape, views
from distgraph.ops import reduction as red
from distgraph.ops.methods import inplace_variant
from distgraph.ops.promotion import refuse


# ---- in-place cumulative ops ----------------------------------------------------------------------------
def _cumulative_(fn, name):
    method = inplace_variant(fn, name)

    def inplace(self, dim, *, dtype=None):
        if self.array.dtype == np.bool_:  # (cumsum of bool counts in int64, which bool cannot hold)
            refuse(DTypeError, name, self, "not implemented for bool")
        if dtype is not None and dtypes.from_any(dtype).np != self.array.dtype:
            raise DTypeError(
                f"{name}: Bad in-place call: input tensor dtype {self.dtype.name} and output tensor dtype "
                f"{dtypes.from_any(dtype).name} should match"
            )
        return method(self, dim)

    inplace.__name__ = name
    return inplace


cumsum_ = _cumulative_(products.cumsum, "cumsum_")
cumprod_ = _cumulative_(products.cumprod, "cumprod_")


# ---- renorm ------------------------------------------------------------------------------------------------
def renorm(input, p, dim, maxnorm):
    """Each slice along `dim` whose p-norm exceeds `maxnorm` scaled down to norm `maxnorm` (torch's factor
    maxnorm / (norm + 1e-7)); the others are kept. Differentiable through the norm, as torch's."""
    if input.array.dtype.kind != "f":
        refuse(DTypeError, "renorm", input, "expected a floating point tensor")
    if p <= 0:
        raise InputRangeError(f"renorm: non-positive-norm not supported (p={p})")
    if maxnorm < 0:
        raise InputRangeError(f"renorm: expected maxnorm to be >= 0 but got {maxnorm}")
    if input.ndim <= 1:
        raise ShapeError(f"renorm: input needs at least 2 dimensions, got {input.ndim} dimensions")
    axis = red.normalize_dim(dim, input.ndim, "renorm")
    others = tuple(d for d in range(input.ndim) if d != axis)
    norm = red.norm(input, p, dim=others, keepdim=True)
    factor = ew.where(cmp.gt(norm, maxnorm), ew.div(maxnorm, ew.add(norm, 1e-7)), ew.const(1, norm, None))
    return ew.mul(input, factor).contiguous()  # row-major whatever input's layout, as torch's


renorm_ = inplace_variant(renorm, "renorm_")


# ---- fill_diagonal_ -------------------------------------------------------------------------------------------
def _fill_diagonal(input, fill_value, wrap=False):
    """`input` with `fill_value` on its main diagonal (numpy's fill_diagonal, which torch's follows: all
    dims equal past 2-d; `wrap`: a tall matrix's diagonal starts again every N + 1 rows)."""
    if input.ndim < 2:
        raise ShapeError(f"fill_diagonal_: dimensions must larger than 1 (got shape {tuple(input.shape)})")
    if input.ndim > 2 and len(set(input.shape)) > 1:
        raise ShapeError(f"fill_diagonal_: all dimensions of input must be of equal length, got {tuple(input.shape)}")
    xp = input.device.xp
    mask = xp.zeros(input.shape, dtype=bool)
    xp.fill_diagonal(mask, True, wrap=wrap)
    return ew.where(Tensor(mask, device=input.device), ew.const(fill_value, input), input)


fill_diagonal_ = inplace_variant(_fill_diagonal, "fill_diagonal_")


# ---- apply_ / map_: a Python callable per element --------------------------------------------------------------
def apply_(self, callable):
    """`callable(value)` written over each element, as Python numbers, in place (torch's: CPU only, never
    on a tensor that requires grad; the results are cast to the tensor's dtype)."""
    _check_python_map(self, "apply_")
    out = self.array
    for i in np.ndindex(out.shape):
        _write_element(out, i, callable(out[i].item()), "apply_")
    self._vc[0] += 1
    return self


def map_(self, tensor, callable):
    """`callable(self_value, other_value)` written over each element of self in place; `tensor` is
    broadcast to self's shape and must have self's dtype (torch's rules)."""
    _check_python_map(self, "map_")
    if not isinstance(tensor, Tensor) or tensor.array.dtype != self.array.dtype:
        got = tensor.dtype.name if isinstance(tensor, Tensor) else type(tensor).__name__
        raise DTypeError(f"map_: expected a {self.dtype.name} tensor for 'other' (got {got})")
    other = shape.broadcast_to(tensor, self.shape).array
    out = self.array
    for i in np.ndindex(out.shape):
        _write_element(out, i, callable(out[i].item(), other[i].item()), "map_")
    self._vc[0] += 1
    return self


def _check_python_map(self, name):
    if self.device.type != "cpu":
        raise DeviceError(f"{name} is only implemented on CPU tensors (got a tensor on {self.device})")
    if self.requires_grad:
        raise AutogradError(f"Can't call {name}() on Variable that requires grad. Use var.detach().{name}() instead.")
    views.refuse_internal_overlap(self.array, name)


def _write_element(out, i, value, name):
    try:
        out[i] = value
    except (TypeError, ValueError) as exc:
        raise DTypeError(
            f"{name}: the callable returned {type(value).__name__} {value!r}, not a number for a "
            f"{out.dtype} tensor ({exc})"
        ) from None


# ---- new_empty_strided ----------------------------------------------------------------------------------------
def new_empty_strided(self, size, stride, *, dtype=None, device=None, requires_grad=False, **_):
    return strided_empty("new_empty_strided", self, size, stride, dtype, device, requires_grad)


def strided_empty(name, self, size, stride, dtype=None, device=None, requires_grad=False):
    """An uninitialized tensor of `size` whose elements lie `stride` elements apart (torch's): a view of a
    buffer just long enough, so stride(), is_contiguous() and writes see that layout; dtype and device
    default to `self`'s. `name` is the op the errors name."""
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise ShapeError(
            f"{name}: dimensionality of sizes ({len(size)}) must match dimensionality of strides ({len(stride)})"
        )
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise ShapeError(f"{name}: negative sizes or strides are not supported (sizes={size}, strides={stride})")
    dt = dtypes.from_any(dtype).np if dtype is not None else self.array.dtype
    dev = self.device if device is None else as_device(device)
    extent = 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
    buf = dev.xp.empty(extent, dtype=dt)
    arr = dev.xp.lib.stride_tricks.as_strided(buf, size, tuple(s * buf.itemsize for s in stride))
    return Tensor(arr, requires_grad=requires_grad, device=dev)


# ---- random fills ---------------------------------------------------------------------------------------------
def _fill_random(self, name, values):
    """Write `values` (an array of self's shape) into `self`, as uniform_ does; recorded when self
    requires grad (the old value gets a zero gradient)."""
    values = values.astype(self.array.dtype, copy=False)
    if grad_mode.state.grad_enabled and self.requires_grad:
        return inplace_variant(views.overwrite, name)(self, Tensor(values, device=self.device))
    views.refuse_internal_overlap(self.array, name)
    views.check_view_write(self, (), name)
    self.array[...] = values
    self._vc[0] += 1
    return self


def _continuous(self, name, what):
    if self.array.dtype.kind != "f":
        raise DTypeError(
            f"{name}: {what} distribution is a continuous probability distribution. dtype must be a floating "
            f"point but you specified {self.dtype.name}"
        )


def _uniform_open(self):
    """Uniform samples in (0, 1], float64, of self's shape: logs of them are finite."""
    return 1.0 - rng.generator(self.device).random(self.shape)


@on_its_device
@rng.takes_generator("exponential_")
def exponential_(self, lambd=1.0):
    _continuous(self, "exponential_", "Exponential")
    if not lambd > 0:
        raise InputRangeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd}")
    return _fill_random(self, "exponential_", -self.device.xp.log(_uniform_open(self)) / lambd)


@on_its_device
@rng.takes_generator("cauchy_")
def cauchy_(self, median=0.0, sigma=1.0):
    _continuous(self, "cauchy_", "Cauchy")
    if not sigma > 0:
        raise InputRangeError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma}")
    u = rng.generator(self.device).random(self.shape)
    return _fill_random(self, "cauchy_", median + sigma * self.device.xp.tan(np.pi * (u - 0.5)))


@on_its_device
@rng.takes_generator("log_normal_")
def log_normal_(self, mean=1.0, std=2.0):
    if self.array.dtype.kind != "f":
        refuse(DTypeError, "log_normal_", self, "not implemented for this dtype")
    if not std > 0:
        raise InputRangeError(f"log_normal_ expects std > 0.0, but found std={std}")
    normal = rng.generator(self.device).normal(mean, std, self.shape)
    return _fill_random(self, "log_normal_", self.device.xp.exp(normal))


@on_its_device
@rng.takes_generator("geometric_")
def geometric_(self, p):
    """The number of Bernoulli(p) trials up to the first success (1, 2, ...): the inverse of its CDF."""
    if self.array.dtype == np.bool_:
        refuse(DTypeError, "geometric_", self, "not implemented for bool")
    if not 0 < p < 1:
        raise InputRangeError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    xp = self.device.xp
    trials = xp.maximum(xp.ceil(xp.log(_uniform_open(self)) / np.log1p(-p)), 1)
    return _fill_random(self, "geometric_", trials)


@on_its_device
@rng.takes_generator("random_")
def random_(self, *bounds, to=None):
    """random_(from, to): integers uniform in [from, to - 1]; random_(to): [0, to - 1]; random_(): [0, the
    largest integer the dtype holds exactly] (2**mantissa for floats, as torch)."""
    if len(bounds) > 2:
        raise TypeError(f"random_() takes at most 2 bounds (from, to), got {len(bounds)}")
    from_ = bounds[0] if len(bounds) == 2 or (bounds and to is not None) else 0
    to = bounds[-1] if len(bounds) == 2 or (bounds and to is None) else to
    dt = self.array.dtype
    if to is None:
        high = (1 << (np.finfo(dt).nmant + 1)) if dt.kind == "f" else 1 if dt.kind == "b" else np.iinfo(dt).max
    else:
        if from_ >= to:
            raise InputRangeError(f"random_ expects 'from' to be less than 'to', but got from={from_} >= to={to}")
        high = to - 1
        if dt.kind in "biu":
            lo, hi = (0, 1) if dt.kind == "b" else (np.iinfo(dt).min, np.iinfo(dt).max)
            if not lo <= from_ <= hi:
                raise InputRangeError(f"random_: from={from_} is out of bounds for {self.dtype.name}")
            if not lo <= high <= hi:
                raise InputRangeError(f"random_: to - 1 = {high} is out of bounds for {self.dtype.name}")
    gen = rng.generator(self.device)
    return _fill_random(self, "random_", gen.integers(from_, high, self.shape, endpoint=True))


# ---- dtypes and metadata ---------------------------------------------------------------------------------------
_LEGACY = "bool Bool uint8 Byte int8 Char int16 Short int32 Int int64 Long float16 Half float32 Float float64 Double"
_TYPE_NAMES = {dtype: f"{name}Tensor" for dtype, name in zip(_LEGACY.split()[::2], _LEGACY.split()[1::2])}


def _type(self, dtype=None):
    """torch's legacy type names: `t.type()` -> 'distgraph.FloatTensor'; `t.type('torch.DoubleTensor')` casts."""
    if dtype is None:
        return f"distgraph.{_TYPE_NAMES[self.dtype.name]}"
    if isinstance(dtype, str) and dtype.endswith("Tensor"):
        legacy = dtype.rsplit(".", 1)[-1]
        dtype = next((n for n, t in _TYPE_NAMES.items() if t == legacy), dtype)
    return self.to(dtype)


def _as(dtype):
    """The shorthand t.float(), t.long(), ... (torch's, memory_format accepted): t.to(dtype)."""
    return lambda self, memory_format=None: self.to(dtype)


def _bfloat16(self, memory_format=None):
    raise DTypeError(
        f"bfloat16: distgraph's arrays are numpy/cupy arrays, which have no bfloat16 dtype (a {self.dtype.name} "
        f"tensor of shape {tuple(self.shape)}); use half() or float()"
    )


def _matrix_transpose(name):
    def prop(self):
        if self.ndim == 0 and name == "mT":  # torch: deprecated identity on 0-d
            return shape.permute(self, ())
        if self.ndim < 2:
            raise ShapeError(
                f"tensor.{name} is only supported on matrices or batches of matrices. Got {self.ndim}-D tensor."
            )
        return shape.transpose(self, -2, -1)

    return prop


def _h(self):
    """The conjugate transpose of a matrix: its transpose for real tensors (2-d only, or 0-d: as torch)."""
    if self.ndim == 0:
        return shape.permute(self, ())
    if self.ndim != 2:
        raise ShapeError(
            f"tensor.H is only supported on matrices (2-D tensors). Got {self.ndim}-D tensor."
            + (" For batches of matrices, consider using tensor.mH" if self.ndim > 2 else "")
        )
    return shape.transpose(self, 0, 1)


def adjoint(input):
    """torch.adjoint: the conjugate transpose of the last two dims (the transpose, for real tensors)."""
    return _matrix_transpose("adjoint")(input)


def get_device(input):
    """-1 on the CPU, the GPU's index on cuda (torch's)."""
    return -1 if input.device.type == "cpu" else (input.device.index or 0)


METHODS = {
    "cumsum_": cumsum_,
    "cumprod_": cumprod_,
    "renorm": renorm,
    "renorm_": renorm_,
    "exponential_": exponential_,
    "cauchy_": cauchy_,
    "log_normal_": log_normal_,
    "geometric_": geometric_,
    "random_": random_,
    "fill_diagonal_": fill_diagonal_,
    "apply_": apply_,
    "map_": map_,
    "new_empty_strided": new_empty_strided,
    "type": _type,
    **{
        name: _as(getattr(dtypes, dt))
        for name, dt in (
            ("byte", "uint8"),
            ("char", "int8"),
            ("short", "int16"),
            ("int", "int32"),
            ("long", "int64"),
            ("half", "float16"),
            ("float", "float32"),
            ("double", "float64"),
            ("bool", "bool_"),
        )
    },  # fmt: skip
    "bfloat16": _bfloat16,
    "adjoint": adjoint,
    "get_device": get_device,
}
PROPERTIES = {
    "H": _h,
    "mH": _matrix_transpose("mH"),
    "mT": _matrix_transpose("mT"),
    "itemsize": lambda self: self.array.itemsize,
    "is_cpu": lambda self: self.device.type == "cpu",
}


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name, fn in PROPERTIES.items():
        setattr(Tensor, name, property(fn))
