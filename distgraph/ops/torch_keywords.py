"""The keywords torch's argument parser adds to its bindings: `out=` (out_arg.py) and numpy's names `axis` for
`dim` and `keepdims` for `keepdim` (`x.sum(axis=1, keepdims=True)`, `dg.cat(ts, axis=0)`).

Which functions take them is torch's (keyword_names.py, generated from torch 2.13): `out` on ~340 functions of
`dg`, `dg.linalg` and `dg.special` (never on Tensor methods, as torch's); the numpy names wherever torch's
binding is its argument parser and has a `dim` or `keepdim` — functions and Tensor methods alike (torch's Python
functions, `F.softmax`, `torch.split`, do not take them, and neither do distgraph's). torch's parser also reads
`x`, `a`, `x1` for `input` and `x2` for `other`; distgraph does not.

Each such function is wrapped once, where its namespace is assembled (`accept`, `install_methods`): one more
Python frame, with the function's own parameters where keyword_codegen.py can generate it (every wrapper but the
creation functions', whose signatures are set by hand: theirs takes `out` through `*args, **kwargs`). The ops a model's layers and
operators run (`a @ b`, `F.linear`, `x + y`) are not wrapped. `distgraph bench ops`, alternated with the code
before these keywords (three pairs, a noisy host): geometric mean 1.12, 1.11, 1.14× torch against 1.13, 1.10,
1.11×; its `sigmoid-mul-sum` chain (which calls `sum(1, keepdim=True)`) 13.75, 13.89, 14.46 µs an op against
13.71 and two runs disturbed by the host. A function under several names stays one object
(`dg.special.expit is dg.sigmoid`); its messages use the name it was first wrapped under (the top level first,
each namespace in sorted order: dg.multiply's say "mul").
"""

import functools

from distgraph.ops.keyword_codegen import explicit
from distgraph.ops.keyword_names import NUMPY_NAMES, OUT
from distgraph.ops.out_arg import call_into

_wrappers = {}  # (function, takes out, takes numpy names) -> its wrapper


def accept(namespace, space):
    """Wrap the functions of `namespace` (a module's globals) that take torch's keywords in `space` ("" for the
    top level, "linalg", "special"). Names imported on first use (lazy_attrs.py) are wrapped there (`keywords`)."""
    for name in sorted((OUT[space] | NUMPY_NAMES[space]) & namespace.keys()):
        namespace[name] = keywords(namespace[name], name, space, namespace["__name__"])


def keywords(fn, name, space, module):
    """`fn`, named `name` in `space` (module `module`), taking the keywords torch's binding of that name takes."""
    return with_keywords(fn, name, (module, name), out=name in OUT[space], numpy_names=name in NUMPY_NAMES[space])


def install_methods(classes):
    """Tensor's methods whose torch binding takes `dim`/`keepdim` take numpy's names too."""
    for cls in classes:
        for name in sorted(NUMPY_NAMES["Tensor"] & cls.__dict__.keys()):
            home = (cls.__module__, f"{cls.__qualname__}.{name}")
            setattr(cls, name, with_keywords(cls.__dict__[name], name, home, numpy_names=True))


def with_keywords(fn, name, home, out=False, numpy_names=False):
    """The wrapper of `fn` (made once), `home` the (module, qualified name) it is first installed as: where pickle
    finds it (a function is pickled by that name, and must be the object found there)."""
    key = (fn, out, numpy_names)
    if key in _wrappers or not (out or numpy_names):
        return _wrappers.get(key, fn)
    call = explicit(fn, name, out, numpy_names)
    if call is None and not out:
        return fn  # no parameter `axis` could fill (keyword_codegen.py): torch's numpy names do not apply
    wrapper = functools.wraps(fn)(call or _out_only(fn, name))
    wrapper.__module__, wrapper.__qualname__ = home
    _wrappers[key] = wrapper
    return wrapper


def _out_only(fn, name):
    """The `*args, **kwargs` wrapper taking `out`, where keyword_codegen.py makes none (the creation functions)."""

    def call(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        return call_into(fn, name, args, kwargs, out)

    return call
