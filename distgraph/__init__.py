"""distgraph: a PyTorch-style deep-learning engine built around the computation graph.

Write a model eagerly, train it in one process on numpy (cpu) or cupy (cuda), or capture its graph,
partition it and run it across the workers of a Ray cluster. See DESIGN.md for the map.
"""

import warnings as _warnings

from distgraph import autograd, cuda, dtypes, errors, host_memory  # noqa: F401  (host_memory: keeps freed arrays)
from distgraph import ops as _ops  # noqa: F401  (installs Tensor methods)
from distgraph import cuda_amp as _cuda_amp  # noqa: F401, I001  (dg.cuda.amp: it attaches itself)
from distgraph.autograd import Tensor, enable_grad, no_grad, set_grad_enabled  # noqa: F401
from distgraph.autograd.formats import channels_last, channels_last_3d, contiguous_format, preserve_format, strided  # noqa: F401
from distgraph.autograd.grad_mode import inference_mode, is_grad_enabled, is_inference_mode_enabled  # noqa: F401
from distgraph.backend import Device, cuda_is_available, device  # noqa: F401
from distgraph.dtypes import (  # noqa: F401
    DType,
    bool_,
    float16,
    float32,
    float64,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    set_default_dtype,
    uint8,
)
from distgraph.ops.creation import (  # noqa: F401
    arange,
    as_tensor,
    bernoulli,
    empty,
    empty_like,
    eye,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    multinomial,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from distgraph.ops.compare import (  # noqa: F401
    allclose,
    eq,
    equal,
    ge,
    gt,
    isclose,
    isfinite,
    isinf,
    isnan,
    le,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    ne,
)
from distgraph.ops.rng import initial_seed, manual_seed  # noqa: F401
from distgraph.ops.search import searchsorted  # noqa: F401
from distgraph.ops.regions import diag, diagonal, pad, tril, triu, unfold  # noqa: F401
from distgraph.ops.elementwise import (  # noqa: F401
    abs,
    acos,
    acosh,
    add,
    asin,
    asinh,
    atan,
    atan2,
    atanh,
    ceil,
    clamp,
    clip,
    cos,
    cosh,
    div,
    erf,
    exp,
    exp2,
    expm1,
    floor,
    floor_divide,
    fmod,
    frac,
    log,
    log1p,
    log2,
    log10,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    reciprocal,
    relu,
    remainder,
    round,
    rsqrt,
    sigmoid,
    sign,
    sin,
    sinh,
    sqrt,
    square,
    sub,
    tan,
    tanh,
    trunc,
    where,
)
from distgraph.ops.index_put import index_put  # noqa: F401
from distgraph.ops.indexing_extra import (  # noqa: F401
    diagonal_scatter,
    index_add,
    index_copy,
    index_fill,
    index_reduce,
    masked_scatter,
    narrow_copy,
    put,
    scatter_reduce,
    select,
    select_scatter,
    slice_scatter,
    take,
)
from distgraph.ops.indexing import (  # noqa: F401
    argsort,
    argwhere,
    bincount,
    gather,
    index_select,
    kthvalue,
    masked_fill,
    masked_select,
    nonzero,
    scatter,
    scatter_add,
    sort,
    take_along_dim,
    topk,
)
from distgraph.ops.linalg import addmm, bmm, dot, einsum, log_softmax, matmul, mm, mv, outer, softmax  # noqa: F401
from distgraph.ops.lerp import lerp  # noqa: F401
from distgraph.ops.linalg_extra import (  # noqa: F401
    addbmm,
    addmv,
    addr,
    baddbmm,
    cross,
    diff,
    dist,
    inner,
    kron,
    tensordot,
    trace,
    vdot,
)
from distgraph.ops.linalg_matrix import (  # noqa: F401
    cholesky,
    det,
    inverse,
    logdet,
    matrix_power,
    pinverse,
    slogdet,
)
from distgraph.ops.linalg_decomp import householder_product as orgqr  # noqa: F401
from distgraph.ops.linalg_decomp import qr_old as qr  # noqa: F401
from distgraph.ops.linalg_decomp import svd_old as svd  # noqa: F401
from distgraph.ops.linalg_functions import chain_matmul, matrix_exp, pca_lowrank, svd_lowrank  # noqa: F401
from distgraph.ops.linalg_norms import frobenius_norm, nuclear_norm  # noqa: F401
from distgraph.ops.linalg_solvers import cholesky_inverse, cholesky_solve, lu_unpack, triangular_solve  # noqa: F401
from distgraph.ops.linalg_solvers import lu_old as lu  # noqa: F401
from distgraph.ops.linalg_solvers import lu_solve_old as lu_solve  # noqa: F401
from distgraph.ops.math_extra import (  # noqa: F401
    addcdiv,
    addcmul,
    bitwise_and,
    bitwise_left_shift,
    bitwise_not,
    bitwise_or,
    bitwise_right_shift,
    bitwise_xor,
    clamp_max,
    clamp_min,
    copysign,
    deg2rad,
    digamma,
    erfc,
    erfinv,
    fix,
    float_power,
    fmax,
    fmin,
    frexp,
    gcd,
    heaviside,
    hypot,
    i0,
    isneginf,
    isposinf,
    isreal,
    lcm,
    ldexp,
    lgamma,
    mvlgamma,
    logaddexp,
    logaddexp2,
    logit,
    nan_to_num,
    nextafter,
    polygamma,
    positive,
    rad2deg,
    sgn,
    signbit,
    sinc,
    xlogy,
)
from distgraph.ops.math_names import (  # noqa: F401
    abs_,
    absolute,
    acos_,
    acosh_,
    arccos,
    arccos_,
    arccosh,
    arccosh_,
    arcsin,
    arcsin_,
    arcsinh,
    arcsinh_,
    arctan,
    arctan2,
    arctan_,
    arctanh,
    arctanh_,
    addmv_,
    asin_,
    asinh_,
    atan_,
    atanh_,
    ceil_,
    clamp_,
    clamp_max_,
    clamp_min_,
    clip_,
    clone,
    cos_,
    cosh_,
    deg2rad_,
    detach,
    detach_,
    divide,
    erf_,
    erfc_,
    exp2_,
    exp_,
    expm1_,
    fill_,
    fix_,
    floor_,
    ger,
    frac_,
    gcd_,
    greater,
    greater_equal,
    i0_,
    index_put_,
    is_complex,
    is_floating_point,
    is_inference,
    is_nonzero,
    is_same_size,
    is_signed,
    lcm_,
    ldexp_,
    less,
    less_equal,
    log10_,
    log1p_,
    log2_,
    log_,
    logit_,
    multiply,
    nan_to_num_,
    neg_,
    negative,
    negative_,
    not_equal,
    numel,
    rad2deg_,
    reciprocal_,
    relu_,
    round_,
    rsqrt_,
    sigmoid_,
    sin_,
    sinc_,
    sinh_,
    sqrt_,
    square_,
    subtract,
    swapaxes,
    swapdims,
    tan_,
    tanh_,
    true_divide,
    trunc_,
    xlogy_,
    zero_,
)
from distgraph.ops.reorder import flip, fliplr, flipud, roll  # noqa: F401
from distgraph.ops.products import cumprod, cumsum, prod  # noqa: F401
from distgraph.ops.reduction import (  # noqa: F401
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    count_nonzero,
    logsumexp,
    max,
    mean,
    min,
    norm,
    sum,
)
from distgraph.ops.shape_extra import (  # noqa: F401
    diag_embed,
    diagflat,
    dsplit,
    hsplit,
    moveaxis,
    ravel,
    rot90,
    tensor_split,
    vsplit,
)
from distgraph.ops.inplace_shape import resize_as_  # noqa: F401
from distgraph.ops.tensor_extra import adjoint, get_device, renorm  # noqa: F401
from distgraph.ops.statistics import std, std_mean, var, var_mean  # noqa: F401
from distgraph.ops.reduction_extra import (  # noqa: F401
    aminmax,
    cummax,
    cummin,
    logcumsumexp,
    median,
    mode,
    msort,
    nanmean,
    nanmedian,
    nanquantile,
    nansum,
    quantile,
)
from distgraph.ops.namespace_extra import (  # noqa: F401
    atleast_1d,
    atleast_2d,
    atleast_3d,
    block_diag,
    broadcast_shapes,
    bucketize,
    can_cast,
    cartesian_prod,
    cdist,
    column_stack,
    combinations,
    concatenate,
    cumulative_trapezoid,
    dstack,
    finfo,
    iinfo,
    isin,
    meshgrid,
    pdist,
    result_type,
    row_stack,
    rsub,
    trapezoid,
    trapz,
    tril_indices,
    triu_indices,
    unravel_index,
    vander,
)
from distgraph.ops.random_extra import (  # noqa: F401
    bartlett_window,
    binomial,
    blackman_window,
    get_num_threads,
    get_rng_state,
    hamming_window,
    hann_window,
    kaiser_window,
    normal,
    poisson,
    randint_like,
    seed,
    set_num_threads,
    set_rng_state,
)
from distgraph.ops.counting import corrcoef, cov, histc, unique, unique_consecutive  # noqa: F401
from distgraph.ops.shape import (  # noqa: F401
    broadcast_tensors,
    broadcast_to,
    cat,
    chunk,
    concat,
    expand,
    flatten,
    hstack,
    movedim,
    narrow,
    permute,
    repeat_interleave,
    reshape,
    split,
    squeeze,
    stack,
    t,
    tile,
    transpose,
    unbind,
    unflatten,
    unsqueeze,
    vstack,
)

from distgraph.ops.torch_names import *  # noqa: F403,E402  (pi, is_tensor, view_copy, ...: its __all__)

bool, float, double, half, long, int = bool_, float32, float64, float16, int64, int32  # noqa: A001  (as torch's)
dtype = DType  # (torch.dtype: isinstance(x.dtype, dg.dtype))

__version__ = "0.1.0"

# An inf or NaN an op makes (x / 0, log(0), sqrt(-1)) is a value, as in torch, which warns of none:
# numpy's RuntimeWarnings raised from distgraph's own modules are left out. A filter costs nothing until
# a warning is raised, where an np.errstate around each op would cost ~1 µs a call (a fifth of a small
# op); the user's own numpy calls still warn. An import inside `warnings.catch_warnings()` (pytest's
# collection) loses the filter when that block ends; backward runs under one errstate anyway (engine.py).
_warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"distgraph\.")

_LAZY = {
    "nn": "distgraph.nn",
    "optim": "distgraph.optim",
    "graph": "distgraph.graph",
    "distributed": "distgraph.distributed",
    "io": "distgraph.io",
    "linalg": "distgraph.linalg",
    "special": "distgraph.special",
    "distributions": "distgraph.distributions",
    "utils": "distgraph.utils",
    "testing": "distgraph.testing",
    "data": "distgraph.data",
    "func": "distgraph.func",
    "amp": "distgraph.amp",
    "backends": "distgraph.backends",
}
_LAZY_ATTRS = {
    "save": ("distgraph.io", "save"),
    "load": ("distgraph.io", "load"),
    "compile": ("distgraph.graph.compile", "compile"),
    "Trainer": ("distgraph.trainer", "Trainer"),
    "vmap": ("distgraph.func.batching", "vmap"),
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name in _LAZY_ATTRS:
        mod, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(mod), attr)
    forms = importlib.import_module("distgraph.nn.functional.torch_forms")  # torch.dropout, torch.kl_div, ...
    if name in forms.__all__:
        return getattr(forms, name)
    raise AttributeError(f"module 'distgraph' has no attribute {name!r}")
