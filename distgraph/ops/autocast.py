"""Autocast (torch.autocast's API): the context manager and decorator, its per-thread state, and the one check
that the public entry points of the listed ops carry (`@autocast_op(name)`).

distgraph has float16 and no bfloat16: the autocast dtype is float16 on "cuda" and on "cpu" (torch's CPU
default is bfloat16; asking for it is refused). On "cpu", numpy computes float16 in software: correct, slow.

Policy (torch's autocast op lists, per device type, for the ops distgraph has):
- "lower": floating inputs other than float64 are cast to the autocast dtype (matmul, linear, conv, ...).
- "fp32": floating inputs are cast to float32 (losses, and on "cuda" softmax, layer_norm, sum, ...).
- "promote": floating inputs are cast to the widest floating dtype among them (on "cuda": addcmul, addcdiv;
  cat and stack promote in distgraph anyway). Not hooked yet: torch's CUDA float32 elementwise ops (exp, log,
  pow, ...: ops/elementwise.py is at its 500-line limit) and index_put / scatter_add / index_copy.
An op not in a device type's table runs unchanged, as every op does outside autocast. The op then runs with
autocast off for that device (as torch's dispatcher excludes its autocast key), so its inner ops keep the
precision it was cast to. The cast is the differentiable `cast` op: a float32 leaf gets a float32 gradient.

The state is thread-local, as torch's. When no autocast is on in the thread, a wrapped op pays one
thread-local read (`_tls.on`, an empty dict) and one extra call.
"""

import functools
import inspect
import threading

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DeviceError, DTypeError
from distgraph.ops.promotion import cast

# The ops distgraph hooks, from torch's lists ("CUDA Ops that can autocast to float16/float32", "CUDA Ops that
# promote to the widest input type", "CPU Ops that can autocast to lower precision/float32"). Only a function
# carrying `@autocast_op(name)` reads this table; einsum is listed because torch's runs through bmm.
_LOWER = (
    "matmul mm bmm addmm baddbmm addbmm linear conv1d conv2d conv3d conv_transpose1d conv_transpose2d "
    "conv_transpose3d scaled_dot_product_attention einsum prelu"
)
_FP32_BOTH = (
    "cross_entropy nll_loss mse_loss l1_loss smooth_l1_loss huber_loss kl_div binary_cross_entropy_with_logits "
    "soft_margin_loss margin_ranking_loss poisson_nll_loss cosine_embedding_loss hinge_embedding_loss prod cdist"
)
_FP32_CUDA = "softmax log_softmax layer_norm group_norm norm sum cumsum cumprod"  # torch refuses binary_cross_entropy
_FP32_CPU = "binary_cross_entropy trace inverse"


def _table(**groups):
    return {name: policy for policy, names in groups.items() for name in " ".join(names).split()}


POLICIES = {
    "cuda": _table(lower=[_LOWER, "mv"], fp32=[_FP32_BOTH, _FP32_CUDA], promote=["addcmul addcdiv"]),
    "cpu": _table(lower=[_LOWER], fp32=[_FP32_BOTH, _FP32_CPU]),
}


class _State(threading.local):
    def __init__(self):
        self.on = {}  # device type -> numpy dtype of the enabled autocasts (empty: autocast off: the fast path)
        self.dtypes = {"cuda": "float16", "cpu": "float16"}  # set even while disabled (get_autocast_dtype)
        self.cache = {}  # id(leaf) -> (leaf, its cast): a parameter is cast once per outermost autocast region
        self.cache_on = True
        self.depth = 0


_tls = _State()


def _fast_dtype(dtype, where):
    name = getattr(dtype, "name", None) or str(dtype)
    if "bfloat16" in name:
        raise DTypeError(
            f"{where}: dtype bfloat16 is not supported: distgraph has no bfloat16 (numpy lacks it); use float16"
        )
    try:
        dt = dtypes.from_any(dtype)
    except Exception:
        dt = None
    if dt is None or dt.np != np.float16:
        raise DTypeError(f"{where}: dtype {dtype!r} is not supported: distgraph's autocast casts to float16 only")
    return dt


def _device_type(device_type, where):
    if not isinstance(device_type, str):
        raise DeviceError(f"{where}: expected device_type of type str, got {type(device_type).__name__}")
    if device_type not in POLICIES:
        raise DeviceError(f"{where}: unsupported device_type {device_type!r}: distgraph autocasts 'cuda' and 'cpu'")
    return device_type


def is_autocast_enabled(device_type=None):
    """Whether autocast is on for `device_type` in this thread (None: "cuda", as torch's legacy form)."""
    return _device_type(device_type or "cuda", "is_autocast_enabled") in _tls.on


def get_autocast_dtype(device_type):
    """The dtype autocast casts to on `device_type` (float16: distgraph has no bfloat16, torch's CPU default)."""
    return dtypes.from_any(_tls.dtypes[_device_type(device_type, "get_autocast_dtype")])


class autocast:  # noqa: N801  (torch's name)
    """torch.autocast: within the block (or the decorated function), the listed ops run in mixed precision.

    Nestable; an inner `autocast(..., enabled=False)` turns it off for its device type. `cache_enabled`
    (default True) casts each float32 parameter once per outermost region. Only float16 is supported.
    """

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device = _device_type(device_type, "autocast")
        self.fast_dtype = _fast_dtype(dtype, "autocast") if dtype is not None else get_autocast_dtype(device_type)
        self._enabled = bool(enabled)
        self._cache_enabled = _tls.cache_on if cache_enabled is None else bool(cache_enabled)
        self._saved = []

    def __enter__(self):
        s = _tls
        self._saved.append((s.on, s.dtypes[self.device], s.cache_on))
        on = dict(s.on)
        if self._enabled:
            on[self.device] = self.fast_dtype.np
        else:
            on.pop(self.device, None)
        s.on, s.dtypes[self.device], s.cache_on = on, self.fast_dtype.np.name, self._cache_enabled
        s.depth += 1
        return self

    def __exit__(self, *exc):
        s = _tls
        s.on, s.dtypes[self.device], s.cache_on = self._saved.pop()
        s.depth -= 1
        if s.depth == 0:
            s.cache.clear()  # torch clears its cast cache on leaving the outermost autocast
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def decorated(*args, **kwargs):
            with self:
                return func(*args, **kwargs)

        return decorated


def _tensors(args):
    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, list | tuple):
            yield from (t for t in a if isinstance(t, Tensor))


def _cast_to(t, dtype, cache):
    if t.array.dtype == dtype:
        return t
    if cache is None or not (t.requires_grad and t.grad_fn is None):
        return cast(t, dtype)
    hit = cache.get(id(t))
    if hit is None or hit[0] is not t or hit[1].dtype.np != dtype:
        hit = cache[id(t)] = (t, cast(t, dtype))
    return hit[1]


def _convert(a, pick, cache):
    if isinstance(a, Tensor):
        dtype = pick(a)
        return a if dtype is None else _cast_to(a, dtype, cache)
    if isinstance(a, list | tuple) and any(isinstance(t, Tensor) for t in a):
        return type(a)(_convert(t, pick, cache) for t in a)
    return a


def _run(name, fn, args, kwargs):
    first = next((t for t in _tensors((*args, *kwargs.values())) if t.array.dtype.kind == "f"), None)
    device = first.device.type if first is not None else None
    target = _tls.on.get(device)
    policy = POLICIES[device].get(name) if target is not None else None
    if policy is None:
        return fn(*args, **kwargs)
    if policy == "lower":

        def pick(t):
            return target if t.array.dtype.kind == "f" and t.array.dtype.itemsize < 8 else None
    else:
        if policy == "fp32":
            wide = "float32"
        else:
            wide = max(t.array.dtype for t in _tensors((*args, *kwargs.values())) if t.array.dtype.kind == "f")

        def pick(t):
            return wide if t.array.dtype.kind == "f" and (policy != "fp32" or t.array.dtype.itemsize < 8) else None

    cache = _tls.cache if _tls.cache_on else None
    args = tuple(_convert(a, pick, cache) for a in args)
    kwargs = {k: _convert(v, pick, cache) for k, v in kwargs.items()}
    saved = _tls.on
    _tls.on = {k: v for k, v in saved.items() if k != device}  # the op's own inner ops run uncast
    try:
        return fn(*args, **kwargs)
    finally:
        _tls.on = saved


def _forwarding_source(fn):
    """`fn`'s own parameter list and the two ways to pass it on: the call to `fn`, and `_run`'s (args, kwargs)."""
    params, call, pos, kw, defaults = [], [], [], [], {}
    kinds = [p.kind for p in inspect.signature(fn).parameters.values()]
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if p.default is not p.empty:
            defaults[i] = p.default
        text = p.name if p.default is p.empty else f"{p.name}=_defaults[{i}]"
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}"), call.append(f"*{p.name}"), pos.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}"), call.append(f"**{p.name}"), kw.append(f"**{p.name}")
        elif p.kind is p.KEYWORD_ONLY:
            if p.VAR_POSITIONAL not in kinds and (i == 0 or kinds[i - 1] is not p.KEYWORD_ONLY):
                params.append("*")  # the bare star before the first keyword-only parameter
            params.append(text), call.append(f"{p.name}={p.name}"), kw.append(f"{p.name!r}: {p.name}")
        else:
            params.append(text), call.append(p.name), pos.append(p.name)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(kinds) or kinds[i + 1] is not p.POSITIONAL_ONLY):
            params.append("/")
    args = f"({', '.join(pos)}{',' if pos else ''})"
    return ", ".join(params), ", ".join(call), args, f"{{{', '.join(kw)}}}", defaults


def autocast_op(name, fn=None):
    """Decorator (or `autocast_op(name, fn)`): `fn` follows autocast's policy for op `name` (POLICIES).

    The wrapper is compiled with `fn`'s own signature, so that when autocast is off a call costs one
    thread-local read and one plain call (no packing of *args/**kwargs): ~50 ns."""
    if fn is None:
        return functools.partial(autocast_op, name)
    params, call, pos, kw, defaults = _forwarding_source(fn)
    source = (
        f"def {fn.__name__}({params}):\n"
        f"    if _tls.on:\n"
        f"        return _run({name!r}, _fn, {pos}, {kw})\n"
        f"    return _fn({call})\n"
    )
    scope = {"_tls": _tls, "_run": _run, "_fn": fn, "_defaults": defaults}
    exec(compile(source, f"<autocast_op {name}>", "exec"), scope)  # noqa: S102  (source built from a signature)
    return functools.wraps(fn)(scope[fn.__name__])
