"""The package's attributes imported on first use (`import distgraph` stays light): its subpackages
(`dg.nn`, `dg.optim`, `dg.distributed`, ...), a few functions of higher layers (`dg.save`, `dg.compile`,
`dg.Trainer`, ...) and torch's functional forms at top level (`dg.dropout`). distgraph/__init__.py imports
this module's `__getattr__` as its own (PEP 562).
"""

import importlib

from distgraph.ops.torch_keywords import keywords

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
    "accelerator": "distgraph.accelerator",
    "cpu": "distgraph.cpu",
}
_LAZY_ATTRS = {
    "save": ("distgraph.io", "save"),
    "load": ("distgraph.io", "load"),
    "compile": ("distgraph.graph.compile", "compile"),
    "Trainer": ("distgraph.trainer", "Trainer"),
    "vmap": ("distgraph.func.batching", "vmap"),
    "get_autocast_cpu_dtype": ("distgraph.cpu", "get_autocast_cpu_dtype"),
}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name in _LAZY_ATTRS:
        mod, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(mod), attr)
    forms = importlib.import_module("distgraph.nn.functional.torch_forms")  # torch.dropout, torch.kl_div, ...
    if name in forms.__all__:
        return keywords(getattr(forms, name), name, "", __name__.rpartition(".")[0])  # out=, axis=, keepdims=
    if name == "bfloat16":  # a ported script's first stop: say what to use instead
        raise AttributeError(
            "module 'distgraph' has no attribute 'bfloat16': distgraph has no bfloat16; use float16 "
            "(autocast(..., dtype=dg.float16))"
        )
    raise AttributeError(f"module 'distgraph' has no attribute {name!r}")
