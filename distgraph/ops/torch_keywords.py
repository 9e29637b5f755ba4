"""The keywords torch's argument parser adds to its bindings: `out=` (out_arg.py) and numpy's names `axis` for
`dim` and `keepdims` for `keepdim` (`x.sum(axis=1, keepdims=True)`, `dg.cat(ts, axis=0)`).

Which functions take them is torch's (keyword_names.py, generated from torch 2.13): `out` on ~340 functions of
`dg`, `dg.linalg` and `dg.special` (never on Tensor methods, as torch's); the numpy names wherever torch's
binding is its argument parser and has a `dim` or `keepdim` — functions and Tensor methods alike (torch's Python
functions, `F.softmax`, `torch.split`, do not take them, and neither do distgraph's). torch's parser also reads
`x`, `a`, `x1` for `input` and `x2` for `other`; distgraph does not.

Each such function is wrapped once, where its namespace is assembled (`accept`, `install_methods`): one Python
frame, the price of keywords the functions' own signatures do not name — measured on `x.sum(dim=0)` of 16
values, 0.22–0.26 µs a call (5–6 % of that call; alternating the wrapped and bare method, medians of 8). The
ops a model's layers and operators run (`a @ b`, `F.linear`, `x + y`) are not wrapped. A function under
several names stays one object (`dg.special.expit is dg.sigmoid`); its messages use the name it was first
wrapped under (the top level first, each namespace in sorted order: dg.multiply's say "mul").
"""

import functools

from distgraph.ops.keyword_codegen import explicit
from distgraph.ops.keyword_names import NUMPY_NAMES, OUT
from distgraph.ops.out_arg import call_into

_NUMPY = (("axis", "dim"), ("keepdims", "keepdim"))
_wrappers = {}  # (function, takes out, takes numpy names) -> its wrapper


def accept(namespace, space):
    """Wrap the functions of `namespace` (a module's globals) that take torch's keywords in `space` ("" for the
    top level, "linalg", "special"). Names imported on first use (lazy_attrs.py) are wrapped there (`keywords`)."""
    for name in sorted((OUT[space] | NUMPY_NAMES[space]) & namespace.keys()):
        namespace[name] = keywords(namespace[name], name, space)


def keywords(fn, name, space):
    """`fn` (named `name` in `space`) taking the keywords torch's binding of that name takes."""
    return with_keywords(fn, name, out=name in OUT[space], numpy_names=name in NUMPY_NAMES[space])


def install_methods(classes):
    """Tensor's methods whose torch binding takes `dim`/`keepdim` take numpy's names too."""
    for cls in classes:
        for name in sorted(NUMPY_NAMES["Tensor"] & cls.__dict__.keys()):
            setattr(cls, name, with_keywords(cls.__dict__[name], name, numpy_names=True))


def with_keywords(fn, name, out=False, numpy_names=False):
    key = (fn, out, numpy_names)
    if key in _wrappers or not (out or numpy_names):
        return _wrappers.get(key, fn)
    call = explicit(fn, name, out, numpy_names)  # the function's own parameters: no repacking (keyword_codegen.py)
    if call is not None:
        pass
    elif out and numpy_names:

        def call(*args, out=None, **kwargs):
            if "axis" in kwargs or "keepdims" in kwargs:
                _rename(name, kwargs)
            if out is None:
                return fn(*args, **kwargs)
            return call_into(fn, name, args, kwargs, out)

    elif out:

        def call(*args, out=None, **kwargs):
            if out is None:
                return fn(*args, **kwargs)
            return call_into(fn, name, args, kwargs, out)

    else:

        def call(*args, **kwargs):
            if "axis" in kwargs or "keepdims" in kwargs:
                _rename(name, kwargs)
            return fn(*args, **kwargs)

    _wrappers[key] = functools.wraps(fn)(call)
    return _wrappers[key]


def _rename(name, kwargs):
    """numpy's names to torch's, in place (`kwargs` is the call's own dict)."""
    for numpy_name, torch_name in _NUMPY:
        if numpy_name in kwargs:
            if torch_name in kwargs:
                raise TypeError(f"{name}() got multiple values for argument '{torch_name}' (as '{numpy_name}')")
            kwargs[torch_name] = kwargs.pop(numpy_name)
