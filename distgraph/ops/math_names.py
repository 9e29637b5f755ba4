"""torch's names for math_extra's ops and the aliases, in-place forms and namespace functions torch has
around elementwise ops: the Tensor methods (`METHODS`, in-place `INPLACE`, put on Tensor by `install()`)
and the `dg.*` functions that only call a Tensor method (`dg.abs_(t)` is `t.abs_()`, `dg.numel(t)`).

Kept apart from methods.py, which holds the core table: the functions here are names, not new ops.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError, ShapeError
from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.ops import linalg, methods, shape
from distgraph.ops import linalg_decomp as ld
from distgraph.ops import linalg_extra as lx
from distgraph.ops import linalg_functions as lf
from distgraph.ops import linalg_matrix as lm
from distgraph.ops import linalg_solvers as ls
from distgraph.ops import math_extra as mx
from distgraph.ops import special_fns as sf
from distgraph.ops.promotion import cast


# ---- Tensor predicates (methods and namespace functions) ---------------------------------------
def is_complex(input):
    return False  # distgraph has no complex dtypes


def is_signed(input):
    return input.dtype.is_signed


def is_same_size(input, other):
    return tuple(input.shape) == tuple(other.shape)


def is_nonzero(input):
    """The truth of a one-element tensor; torch refuses an empty or a larger one as ambiguous."""
    n = input.numel()
    if n != 1:
        what = "no values" if n == 0 else "more than one value"
        raise ShapeError(f"is_nonzero: Boolean value of Tensor with {what} is ambiguous (shape {tuple(input.shape)})")
    return bool(input.array.reshape(()))


def polygamma_method(self, n):
    """Tensor.polygamma(n): torch's method takes n after self (the function takes it first)."""
    return mx.polygamma(n, self)


METHODS = {
    "addcmul": mx.addcmul,
    "addcdiv": mx.addcdiv,
    "xlogy": mx.xlogy,
    "logaddexp": mx.logaddexp,
    "logaddexp2": mx.logaddexp2,
    "hypot": mx.hypot,
    "copysign": mx.copysign,
    "fmax": mx.fmax,
    "fmin": mx.fmin,
    "float_power": mx.float_power,
    "heaviside": mx.heaviside,
    "sinc": mx.sinc,
    "logit": mx.logit,
    "nan_to_num": mx.nan_to_num,
    "signbit": mx.signbit,
    "isposinf": mx.isposinf,
    "isneginf": mx.isneginf,
    "isreal": mx.isreal,
    "deg2rad": mx.deg2rad,
    "rad2deg": mx.rad2deg,
    "erfc": mx.erfc,
    "erfinv": mx.erfinv,
    "lgamma": mx.lgamma,
    "digamma": mx.digamma,
    "polygamma": polygamma_method,
    "i0": mx.i0,
    "fix": mx.fix,
    "sgn": mx.sgn,
    "positive": mx.positive,
    "gcd": mx.gcd,
    "lcm": mx.lcm,
    "bitwise_and": mx.bitwise_and,
    "bitwise_or": mx.bitwise_or,
    "bitwise_xor": mx.bitwise_xor,
    "bitwise_not": mx.bitwise_not,
    "bitwise_left_shift": mx.bitwise_left_shift,
    "bitwise_right_shift": mx.bitwise_right_shift,
    "ldexp": mx.ldexp,
    "frexp": mx.frexp,
    "nextafter": mx.nextafter,
    "clamp_min": mx.clamp_min,
    "clamp_max": mx.clamp_max,
    "arctan2": ew.atan2,
    "arccosh": ew.acosh,
    "arcsinh": ew.asinh,
    "arctanh": ew.atanh,
    "greater": cmp.gt,
    "greater_equal": cmp.ge,
    "less": cmp.lt,
    "less_equal": cmp.le,
    "not_equal": cmp.ne,
    "is_complex": is_complex,
    "is_signed": is_signed,
    "is_same_size": is_same_size,
    "is_nonzero": is_nonzero,
    "mvlgamma": mx.mvlgamma,
    "addmv": lx.addmv,
    "addr": lx.addr,
    "baddbmm": lx.baddbmm,
    "addbmm": lx.addbmm,
    "inner": lx.inner,
    "vdot": lx.vdot,
    "kron": lx.kron,
    "ger": linalg.outer,
    "trace": lx.trace,
    "diff": lx.diff,
    "cross": lx.cross,
    "dist": lx.dist,
    "det": lm.det,
    "logdet": lm.logdet,
    "slogdet": lm.slogdet,
    "inverse": lm.inverse,
    "cholesky": lm.cholesky,
    "pinverse": lm.pinverse,
    "matrix_power": lm.matrix_power,
    "svd": ld.svd_old,
    "qr": ld.qr_old,
    "orgqr": ld.householder_product,
    "lu": ls.lu_old,
    "lu_solve": ls.lu_solve_old,
    "cholesky_solve": ls.cholesky_solve,
    "cholesky_inverse": ls.cholesky_inverse,
    "triangular_solve": ls.triangular_solve,
    "matrix_exp": lf.matrix_exp,
    "igamma": sf.gammainc,
    "igammac": sf.gammaincc,
}

# in-place forms `name_`, of this table's ops or of methods.METHODS' (the aliases torch has them for)
INPLACE = [
    *("addcmul", "addcdiv", "xlogy", "hypot", "copysign", "heaviside", "sinc", "logit", "nan_to_num"),
    *("deg2rad", "rad2deg", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "i0", "fix", "sgn"),
    *("gcd", "lcm", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bitwise_left_shift"),
    *("bitwise_right_shift", "ldexp", "nextafter", "clamp_min", "clamp_max", "atan2", "arctan2"),
    *("arccos", "arcsin", "arctan", "acosh", "arccosh", "asinh", "arcsinh", "atanh", "arctanh", "log2"),
    *("log10", "absolute", "negative", "divide", "multiply", "subtract", "true_divide"),
    *("addmv", "addr", "baddbmm", "addbmm", "mvlgamma", "igamma", "igammac"),
]


def _float_power_(self, exponent):
    """float_power_ computes in float64, so torch refuses it on a tensor of any other dtype."""
    if self.array.dtype.name != "float64":
        raise DTypeError(
            f"float_power_: the base given to float_power_ has dtype {self.dtype.name} but the operation's "
            f"result requires dtype float64"
        )
    return _FLOAT_POWER_INPLACE(self, exponent)


_FLOAT_POWER_INPLACE = methods.inplace_variant(mx.float_power, "float_power_")


def _recorded_comparison(fn):
    """The base of a comparison's in-place form (`eq_`): torch records it, with zero gradients to self and
    other, so where one needs grad the 0/1 values come from a where that passes them none."""

    def base(self, other):
        result = fn(self, other)
        other_grad = isinstance(other, Tensor) and other.requires_grad
        if not (self.requires_grad or other_grad):
            return result
        everywhere = Tensor(self.device.xp.ones(self.shape, dtype=bool), device=self.device)
        passed_none = ew.add(self, ew.mul(other, 0)) if other_grad else self  # (its values are never read)
        return ew.where(everywhere, cast(result, self.array.dtype), passed_none)

    return base


COMPARISONS = {"eq": cmp.eq, "ne": cmp.ne, "lt": cmp.lt, "le": cmp.le, "gt": cmp.gt, "ge": cmp.ge}
COMPARISONS.update({"greater": cmp.gt, "greater_equal": cmp.ge, "less": cmp.lt, "less_equal": cmp.le})
COMPARISONS["not_equal"] = cmp.ne


def install():
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name in INPLACE:
        setattr(Tensor, name + "_", methods.inplace_variant(METHODS.get(name) or methods.METHODS[name], name + "_"))
    Tensor.float_power_ = _float_power_
    for name, fn in COMPARISONS.items():
        setattr(Tensor, name + "_", methods.inplace_variant(_recorded_comparison(fn), name + "_"))
    Tensor.logical_xor_ = methods.inplace_variant(cmp.logical_xor, "logical_xor_")  # recorded by neither


# ---- namespace functions that call the Tensor method of the same name ---------------------------
def _calls_method(name):
    def fn(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)

    fn.__name__ = name
    return fn


# torch's `torch.<name>(t, ...)` for these is `t.<name>(...)`; defined here as module attributes
NAMESPACE = (
    *("abs_", "acos_", "acosh_", "arccos_", "arccosh_", "arcsin_", "arcsinh_", "arctan_", "arctanh_"),
    *("asin_", "asinh_", "atan_", "atanh_", "ceil_", "clamp_", "clamp_max_", "clamp_min_", "clip_", "cos_"),
    *("cosh_", "deg2rad_", "detach_", "erf_", "erfc_", "exp2_", "exp_", "expm1_", "fill_", "fix_", "floor_"),
    *("frac_", "gcd_", "i0_", "index_put_", "lcm_", "ldexp_", "log10_", "log1p_", "log2_", "log_", "logit_"),
    *("nan_to_num_", "neg_", "negative_", "rad2deg_", "reciprocal_", "relu_", "round_", "rsqrt_", "sigmoid_"),
    *("sin_", "sinc_", "sinh_", "sqrt_", "square_", "tan_", "tanh_", "trunc_", "xlogy_", "zero_"),
    *("addmv_", "clone", "numel", "detach", "is_floating_point", "is_inference"),
)
globals().update({name: _calls_method(name) for name in NAMESPACE})

arctan2, arccosh, arcsinh, arctanh = ew.atan2, ew.acosh, ew.asinh, ew.atanh
arccos, arcsin, arctan, absolute = ew.acos, ew.asin, ew.atan, ew.abs
divide, multiply, subtract, true_divide, negative = ew.div, ew.mul, ew.sub, ew.div, ew.neg
swapaxes = swapdims = shape.transpose
greater, greater_equal, less, less_equal, not_equal = cmp.gt, cmp.ge, cmp.lt, cmp.le, cmp.ne
ger = linalg.outer
