"""distgraph: a PyTorch-style deep-learning engine built around the computation graph.

Write a model eagerly, train it in one process on numpy (cpu) or cupy (cuda), or capture its graph,
partition it and run it across the workers of a Ray cluster. See DESIGN.md for the map.
"""

import warnings as _warnings

from distgraph import autograd, dtypes, errors  # noqa: F401
from distgraph import ops as _ops  # noqa: F401  (installs Tensor methods)
from distgraph.autograd import Tensor, enable_grad, no_grad, set_grad_enabled  # noqa: F401
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
    initial_seed,
    linspace,
    logspace,
    manual_seed,
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
    searchsorted,
    sort,
    take_along_dim,
    topk,
)
from distgraph.ops.linalg import addmm, bmm, dot, einsum, log_softmax, matmul, mm, mv, outer, softmax  # noqa: F401
from distgraph.ops.lerp import lerp  # noqa: F401
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

bool = bool_  # noqa: A001  (dg.bool, as torch.bool)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001

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
    "utils": "distgraph.utils",
    "data": "distgraph.data",
}
_LAZY_ATTRS = {
    "save": ("distgraph.io", "save"),
    "load": ("distgraph.io", "load"),
    "compile": ("distgraph.graph.compile", "compile"),
    "Trainer": ("distgraph.trainer", "Trainer"),
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name in _LAZY_ATTRS:
        mod, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'distgraph' has no attribute {name!r}")
