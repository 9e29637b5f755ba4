"""Install the op table as Tensor methods and operators, PyTorch's names, plus in-place variants.

One table (METHODS) maps a method name to the function that implements it; in-place variants
(`add_`, `mul_`, `zero_`, ...) are derived from the out-of-place op by `inplace_variant`, which writes the
result into the tensor's memory (so views see it), bumps the version counter (so saved-tensor checks
fire), and rebinds the tensor to the new graph node when grad is being recorded.
"""

from distgraph import dtypes
from distgraph.autograd import grad_mode
from distgraph.autograd.function import set_history
from distgraph.autograd.tensor import Tensor
from distgraph.backend import mixed_devices, on, to_device, writeable
from distgraph.errors import AutogradError, DTypeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import (
    creation,
    index_put,
    indexing,
    lerp,
    linalg,
    movement,
    products,
    regions,
    reorder,
    rng,
    shape,
    shape_extra,
    statistics,
    views,
)
from distgraph.ops import elementwise as ew
from distgraph.ops import math_extra as mx
from distgraph.ops import reduction as red

METHODS = {
    # elementwise
    "add": ew.add,
    "sub": ew.sub,
    "subtract": ew.sub,
    "mul": ew.mul,
    "multiply": ew.mul,
    "div": ew.div,
    "divide": ew.div,
    "true_divide": ew.div,
    "floor_divide": ew.floor_divide,
    "pow": ew.pow,
    "neg": ew.neg,
    "negative": ew.neg,
    "exp": ew.exp,
    "exp2": ew.exp2,
    "expm1": ew.expm1,
    "log": ew.log,
    "log2": ew.log2,
    "log10": ew.log10,
    "log1p": ew.log1p,
    "sqrt": ew.sqrt,
    "rsqrt": ew.rsqrt,
    "square": ew.square,
    "reciprocal": ew.reciprocal,
    "abs": ew.abs,
    "absolute": ew.abs,
    "sign": ew.sign,
    "sin": ew.sin,
    "cos": ew.cos,
    "tan": ew.tan,
    "asin": ew.asin,
    "acos": ew.acos,
    "atan": ew.atan,
    "arcsin": ew.asin,
    "arccos": ew.acos,
    "arctan": ew.atan,
    "sinh": ew.sinh,
    "cosh": ew.cosh,
    "tanh": ew.tanh,
    "asinh": ew.asinh,
    "acosh": ew.acosh,
    "atanh": ew.atanh,
    "atan2": ew.atan2,
    "floor": ew.floor,
    "ceil": ew.ceil,
    "round": ew.round,
    "trunc": ew.trunc,
    "frac": ew.frac,
    "fmod": ew.fmod,
    "remainder": ew.remainder,
    "erf": ew.erf,
    "sigmoid": ew.sigmoid,
    "relu": ew.relu,
    "clamp": ew.clamp,
    "clip": ew.clamp,
    "maximum": ew.maximum,
    "minimum": ew.minimum,
    "lerp": lerp.lerp,
    "where": None,
    "eq": cmp.eq,
    "ne": cmp.ne,
    "lt": cmp.lt,
    "le": cmp.le,
    "gt": cmp.gt,
    "ge": cmp.ge,
    "isclose": cmp.isclose,
    "allclose": cmp.allclose,
    "equal": cmp.equal,
    "logical_and": cmp.logical_and,
    "logical_or": cmp.logical_or,
    "logical_not": cmp.logical_not,
    "logical_xor": cmp.logical_xor,
    "isnan": cmp.isnan,
    "isinf": cmp.isinf,
    "isfinite": cmp.isfinite,
    "softmax": linalg.softmax,
    "log_softmax": linalg.log_softmax,
    # reductions
    "sum": red.sum,
    "mean": red.mean,
    "prod": products.prod,
    "max": red.max,
    "min": red.min,
    "amax": red.amax,
    "amin": red.amin,
    "argmax": red.argmax,
    "argmin": red.argmin,
    "var": statistics.var,
    "std": statistics.std,
    "logsumexp": red.logsumexp,
    "cumsum": products.cumsum,
    "cumprod": products.cumprod,
    "any": red.any,
    "all": red.all,
    "norm": red.norm,
    "count_nonzero": red.count_nonzero,
    # shape
    "reshape": shape.reshape,
    "view": shape.view,
    "flatten": shape.flatten,
    "unflatten": shape.unflatten,
    "squeeze": shape.squeeze,
    "unsqueeze": shape.unsqueeze,
    "permute": shape.permute,
    "transpose": shape.transpose,
    "swapaxes": shape.transpose,
    "swapdims": shape.transpose,
    "t": shape.t,
    "movedim": shape.movedim,
    "expand": shape.expand,
    "expand_as": shape.expand_as,
    "repeat": shape.repeat,
    "tile": shape.tile,
    "repeat_interleave": shape.repeat_interleave,
    "split": shape.split,
    "chunk": shape.chunk,
    "unbind": shape.unbind,
    "flip": reorder.flip,
    "roll": reorder.roll,
    "narrow": shape.narrow,
    "tril": regions.tril,
    "triu": regions.triu,
    "diagonal": regions.diagonal,
    "diag": regions.diag,
    "unfold": regions.unfold,
    "contiguous": movement.contiguous,
    "broadcast_to": shape.broadcast_to,
    # indexing
    "gather": indexing.gather,
    "scatter": indexing.scatter,
    "scatter_add": indexing.scatter_add,
    "index_select": indexing.index_select,
    "index_put": index_put.index_put,
    "masked_fill": indexing.masked_fill,
    "masked_select": indexing.masked_select,
    "nonzero": indexing.nonzero,
    "sort": indexing.sort,
    "argsort": indexing.argsort,
    "topk": indexing.topk,
    "kthvalue": indexing.kthvalue,
    "take_along_dim": indexing.take_along_dim,
    # linear algebra
    "matmul": linalg.matmul,
    "mm": linalg.mm,
    "bmm": linalg.bmm,
    "dot": linalg.dot,
    "mv": linalg.mv,
    "outer": linalg.outer,
}
METHODS.pop("where")

INPLACE = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "clamp",
    "clip",
    "floor",
    "ceil",
    "round",
    "trunc",
    "fmod",
    "remainder",
    "lerp",
    "masked_fill",
    "scatter",
    "scatter_add",
    "reciprocal",
    "square",
    "sign",
    "log1p",
    "expm1",
    "atan",
    "tan",
    "asin",
    "acos",
    "sinh",
    "cosh",
    "floor_divide",
    "maximum",
    "minimum",
    "erf",
    "exp2",
    "frac",
    "tril",
    "triu",
    "logical_not",
    "logical_and",
    "logical_or",
]


# in-place ops whose output torch does not differentiate: it records nothing for them, so it checks neither
# the view nor the leaf they write into (a float tensor that requires grad keeps its graph)
_NOT_DIFFERENTIABLE = frozenset({"logical_not_", "logical_and_", "logical_or_", "logical_xor_"})


def inplace_variant(fn, name, overlap_ok=False):
    """The in-place method `name` of out-of-place op `fn`; `overlap_ok`: it may write into an expanded
    tensor (one value, or chosen positions, for all the aliases of a location), as torch lets it."""

    def method(self, *args, **kwargs):
        if not overlap_ok:
            views.refuse_internal_overlap(self.array, name)
        if name != "fill_":  # fill_ reads its one value first
            views.refuse_partial_overlap(self.array, (*args, *kwargs.values()), name)
        differentiable = name not in _NOT_DIFFERENTIABLE
        if differentiable:
            views.check_view_write(self, (*args, *kwargs.values()), name)
        recording = (
            differentiable
            and grad_mode.state.grad_enabled
            and (
                self.requires_grad
                or any(isinstance(a, Tensor) and a.requires_grad for a in args)
                or any(isinstance(a, Tensor) and a.requires_grad for a in kwargs.values())  # clamp_(min=t)
            )
        )
        if recording and self.requires_grad and self.grad_fn is None:
            raise AutogradError(f"{name}: a leaf Variable that requires grad is being used in an in-place operation.")
        # recorded, the op reads a snapshot, so the Node it records keeps the pre-mutation value
        source = views.snapshot(self) if recording else self
        result = fn(source, *args, **kwargs)
        res = _result_array(self, result, name)  # checked before the graph is rebased
        rebased = views.rebase(self, result) if recording and result.grad_fn is not None else ()
        _write_into(self, res)
        if recording and result.grad_fn is not None:
            set_history(self, result.grad_fn)
        views.commit(rebased)
        return self

    method.__name__ = name
    return method


def _result_array(self, result, name):
    """`result`'s array, cast to `self`'s dtype where torch casts: what the in-place op writes."""
    if result.device is not self.device:  # a 0-d cpu tensor's result beside a cuda operand is a cuda one
        raise mixed_devices(name, result.device, self.device)
    res = result.array
    if res.dtype != self.array.dtype:
        if dtypes._category(res.dtype) > dtypes._category(self.array.dtype):
            raise DTypeError(
                f"{name}: result type {dtypes.from_numpy(res.dtype).name} can't be cast to the desired output "
                f"type {self.dtype.name}"
            )
        res = res.astype(self.array.dtype)
    if res.shape != self.array.shape:
        raise ShapeError(
            f"{name}: output with shape {tuple(self.shape)} doesn't match the broadcast shape {tuple(res.shape)}"
        )
    return res


def _write_into(self, res):
    with on(self.device):  # (cupy writes on its current GPU: the tensor's; on cpu a shared no-op)
        if self.array.ndim == 0:
            self.array = self.array.copy() if not writeable(self.array) else self.array
            self.array[...] = res
        elif views.internal_overlap(self.array):  # only the changed elements, so a location is changed when
            changed = res != self.array  # any of its aliases is (tril_, masked_fill_), in any order, as torch
            self.array[changed] = res[changed]
        else:
            self.array[...] = res
    self._vc[0] += 1


def _fill_(self, value):
    return _fill_as(self, value, "fill_")


def _fill_as(self, value, name):
    """fill_, or zero_ (`name`: the op its errors name)."""
    if isinstance(value, Tensor):
        if value.ndim:
            raise ShapeError(
                f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} dimensions."
            )
        views.refuse_internal_overlap(self.array, name)  # torch fills aliased elements with a number only
        value = value.to(self.device)  # (torch fills from a 0-d tensor on any device)
    views.check_view_write(self, (value,), name)
    if recording_needed(self, value):  # recorded: the old value gets zero gradient, a Tensor value its sum
        return inplace_variant(views.overwrite, name, overlap_ok=True)(self, value)
    with grad_mode.no_grad(), on(self.device):
        self.array[...] = value.array if isinstance(value, Tensor) else value
    self._vc[0] += 1
    return self


def _zero_(self):
    return _fill_as(self, 0, "zero_")


def _copy_(self, src, non_blocking=False):
    views.refuse_internal_overlap(self.array, "copy_")
    if tuple(getattr(src, "shape", ())) != self.shape:
        shape_extra.check_broadcasts_to(tuple(getattr(src, "shape", ())), tuple(self.shape), "copy_")
    views.refuse_partial_overlap(self.array, (src,), "copy_")
    # as torch's copy_, a grad-requiring src counts only where self's dtype can carry a gradient
    views.check_view_write(self, (src,) if self.array.dtype.kind in "fc" else (), "copy_")
    if isinstance(src, Tensor):
        src = src.to(self.device)  # (differentiable: torch's copy_ across devices carries the gradient back)
    if recording_needed(self, src):
        return inplace_variant(views.overwrite, "copy_")(self, src)
    _write_into(self, to_device(src.array if isinstance(src, Tensor) else src, self.device))
    return self


def recording_needed(self, src):
    """Whether fill_/copy_ are recorded: a tensor that cannot require grad (an integer one) takes a value
    that requires grad as a plain value, cast, as torch's."""
    return (
        grad_mode.state.grad_enabled
        and (self.requires_grad or (isinstance(src, Tensor) and src.requires_grad))
        and self.array.dtype.kind in "fc"
    )


def _refuse_non_float(self, name):
    """torch's uniform_ and normal_ have kernels for floating dtypes only (bernoulli_ writes any dtype)."""
    if self.array.dtype.kind != "f":
        raise DTypeError(f"{name}: not implemented for {self.dtype.name} (as torch: a floating point tensor only)")


@rng.takes_generator("uniform_")
def _uniform_(self, a=0.0, b=1.0):
    _refuse_non_float(self, "uniform_")
    views.refuse_internal_overlap(self.array, "uniform_")
    views.check_view_write(self, (), "uniform_")
    gen = rng.generator(self.device)
    self.array[...] = gen.uniform(a, b, self.shape)
    self._vc[0] += 1
    return self


@rng.takes_generator("normal_")
def _normal_(self, mean=0.0, std=1.0):
    _refuse_non_float(self, "normal_")
    views.refuse_internal_overlap(self.array, "normal_")
    views.check_view_write(self, (), "normal_")
    gen = rng.generator(self.device)
    self.array[...] = gen.normal(mean, std, self.shape)
    self._vc[0] += 1
    return self


@rng.takes_generator("bernoulli_")
def _bernoulli_(self, p=0.5):
    views.refuse_internal_overlap(self.array, "bernoulli_")
    views.check_view_write(self, (), "bernoulli_")
    gen = rng.generator(self.device)
    self.array[...] = gen.random(self.shape) < p
    self._vc[0] += 1
    return self


def _getitem(self, index):
    return indexing.getitem(self, index)


def _setitem(self, index, value):
    index_put.setitem(self, index, value)


def _reflect(fn):
    return lambda self, other: fn(other, self)


def _new(self, fill):
    def method(*size, dtype=None, device=None, requires_grad=False):
        return creation._fill(fill, size, dtype or self.dtype, device or self.device, requires_grad)

    return method


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name in INPLACE:
        setattr(Tensor, name + "_", inplace_variant(METHODS[name], name + "_", overlap_ok=name in ("tril", "triu")))
    Tensor.fill_ = _fill_
    Tensor.zero_ = _zero_
    Tensor.copy_ = _copy_
    Tensor.uniform_ = _uniform_
    Tensor.normal_ = _normal_
    Tensor.bernoulli_ = _bernoulli_
    Tensor.masked_fill_ = inplace_variant(indexing.masked_fill, "masked_fill_", overlap_ok=True)
    Tensor.index_put_ = index_put.index_put_
    Tensor.__getitem__ = _getitem
    Tensor.__setitem__ = _setitem
    Tensor.T = property(lambda self: shape.permute(self, tuple(reversed(range(self.ndim)))))
    Tensor.new_zeros = lambda self, *size, **kw: _new(self, 0)(*creation.size_keyword(size, kw), **kw)
    Tensor.new_ones = lambda self, *size, **kw: _new(self, 1)(*creation.size_keyword(size, kw), **kw)
    Tensor.new_full = lambda self, size, fill_value, **kw: _new(self, fill_value)(*size, **kw)
    Tensor.new_tensor = lambda self, data, dtype=None, device=None, requires_grad=False: creation.tensor(
        data, dtype or self.dtype, device or self.device, requires_grad
    )
    Tensor.type_as = lambda self, other: self.to(other.dtype)
    Tensor.view_as = lambda self, other: shape.view(self, other.shape)  # refuses a copy, as view
    Tensor.reshape_as = lambda self, other: shape.reshape(self, other.shape)
    Tensor.clone = movement.clone
    ops = {
        "__add__": ew._add_fn,  # the operators have no alpha: add/sub without its two calls (per-op cost)
        "__radd__": _reflect(ew._add_fn),
        "__sub__": ew._sub_fn,
        "__rsub__": _reflect(ew._sub_fn),
        "__mul__": ew.mul,
        "__rmul__": _reflect(ew.mul),
        "__truediv__": ew.div,
        "__rtruediv__": lambda self, other: ew.mul(ew.reciprocal(self), other),  # torch's number / t (saves 1/t)
        "__floordiv__": ew.floor_divide,
        "__rfloordiv__": _reflect(ew.floor_divide),
        "__mod__": ew.remainder,
        "__rmod__": _reflect(ew.remainder),
        "__pow__": ew.pow,
        "__rpow__": _reflect(ew.pow),
        "__matmul__": linalg.matmul,
        "__rmatmul__": _reflect(linalg.matmul),
        "__lt__": cmp.lt,
        "__le__": cmp.le,
        "__gt__": cmp.gt,
        "__ge__": cmp.ge,
        "__and__": cmp.bitwise_and,
        "__or__": cmp.bitwise_or,
        "__xor__": cmp.bitwise_xor,
        "__rand__": _reflect(cmp.bitwise_and),
        "__ror__": _reflect(cmp.bitwise_or),
        "__rxor__": _reflect(cmp.bitwise_xor),
        "__lshift__": mx.bitwise_left_shift,
        "__rshift__": mx.bitwise_right_shift,
        "__rlshift__": _reflect(mx.bitwise_left_shift),
        "__rrshift__": _reflect(mx.bitwise_right_shift),
        "__ilshift__": inplace_variant(mx.bitwise_left_shift, "__ilshift__"),
        "__irshift__": inplace_variant(mx.bitwise_right_shift, "__irshift__"),
        "__iand__": inplace_variant(cmp.bitwise_and, "bitwise_and_"),
        "__ior__": inplace_variant(cmp.bitwise_or, "bitwise_or_"),
        "__ixor__": inplace_variant(cmp.bitwise_xor, "bitwise_xor_"),
    }
    for name, fn in ops.items():
        setattr(Tensor, name, fn)
    Tensor.__neg__ = ew.neg
    Tensor.__abs__ = ew.abs
    Tensor.__pos__ = lambda self: self
    Tensor.__invert__ = lambda self: cmp.logical_not(self) if self.array.dtype.kind == "b" else cmp.bitwise_not(self)
    # augmented assignments write in place, as torch's (not `@=`: torch has no __imatmul__ either); the
    # bitwise ones are in `ops`, as their in-place methods are installed later (math_names)
    inplace_ops = {"__iadd__": "add_", "__isub__": "sub_", "__imul__": "mul_", "__itruediv__": "div_",
                   "__ifloordiv__": "floor_divide_", "__imod__": "remainder_", "__ipow__": "pow_"}  # fmt: skip
    for name, base in inplace_ops.items():
        setattr(Tensor, name, getattr(Tensor, base))
    Tensor.__hash__ = object.__hash__
