"""nn.utils.skip_init: build a module without running its parameter initialization, as torch's.

torch builds the module on the "meta" device and then allocates empty storage (`to_empty`); distgraph has
no meta device, so it builds the module from a throwaway subclass whose `reset_parameters` (where every
layer of distgraph draws its initial values) does nothing, then gives the module back its own class. The
parameters hold whatever `empty` left there — as torch's, uninitialized — and no random numbers are drawn.
"""

import inspect

from distgraph.nn.module import Module

__all__ = ["skip_init"]


def _skip(self):
    pass


def skip_init(module_cls, *args, **kwargs):
    """`module_cls(*args, **kwargs)` with its parameters left uninitialized (it must take a `device` argument)."""
    if not (isinstance(module_cls, type) and issubclass(module_cls, Module)):
        raise RuntimeError(f"Expected a Module; got {module_cls}")
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    skipping = type(module_cls.__name__, (module_cls,), {"reset_parameters": _skip, "_reset_parameters": _skip})
    module = skipping(*args, **kwargs)
    module.__class__ = module_cls
    return module
