"""Containers: Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict (and the legacy Container), as
in torch.

Members are registered under their index ("0", "1", ...) or key, so they show up in
named_parameters / state_dict with those names.
"""

from collections import OrderedDict
from collections.abc import Mapping

from distgraph.nn.module import Module
from distgraph.nn.parameter import Parameter


class Container(Module):
    """torch's legacy container: a Module holding the modules given as keyword arguments (subclass Module)."""

    def __init__(self, **kwargs):
        super().__init__()
        for key, value in kwargs.items():
            self.add_module(key, value)


def _index(idx, n, kind):
    idx = int(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for {kind} of length {n}")
    return idx % n


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: modules registered under "0", "1", ... in order."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.register_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def pop(self, index=-1):
        m = self[index]
        del self[index]
        return m

    def _renumber(self, mods):
        """Re-register `mods` under contiguous indices, as torch keeps them after a delete or insert."""
        self._modules.clear()
        for i, m in enumerate(mods):
            self.register_module(str(i), m)


class Sequential(_ModuleSequence):
    """Calls its modules in order, feeding each one's output to the next."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict | dict):
            for name, m in args[0].items():
                self.register_module(name, m)
        else:
            for i, m in enumerate(args):
                self.register_module(str(i), m)

    def forward(self, input):
        for m in self._modules.values():
            input = m(input)
        return input

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index(idx, len(self), "Sequential")]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index(idx, len(self), "Sequential")]
        self.register_module(key, module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        for k in keys[idx] if isinstance(idx, slice) else [keys[_index(idx, len(self), "Sequential")]]:
            del self._modules[k]
        self._renumber(list(self._modules.values()))  # torch renumbers even named members: "0", "1", ...

    def _check_other(self, other):
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")

    def __add__(self, other):
        self._check_other(other)
        return Sequential(*self, *other)

    def __iadd__(self, other):
        self._check_other(other)
        return self.extend(list(other))

    def _times(self, n):
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(n)}")
        if n <= 0:
            raise ValueError(f"Non-positive multiplication factor {n} for {type(self)}")
        return list(self) * n

    def __mul__(self, n):
        """`seq * n`: the same modules (not copies) n times, as torch: their parameters are shared."""
        return Sequential(*self._times(n))

    __rmul__ = __mul__

    def __imul__(self, n):
        mods = self._times(n)
        return self.extend(mods[len(self) :])

    def insert(self, index, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.insert: module should be a Module, got {type(module).__name__}")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Index out of range: {index}")
        mods = list(self._modules.values())
        mods.insert(index if index >= 0 else n + index, module)
        self._renumber(mods)
        return self


class ModuleList(_ModuleSequence):
    """A list of modules that registers them (a plain list would hide their parameters)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self), "ModuleList"))]

    def __setitem__(self, idx, module):
        self.register_module(str(_index(idx, len(self), "ModuleList")), module)

    def __delitem__(self, idx):
        mods = list(self._modules.values())
        del mods[idx if isinstance(idx, slice) else _index(idx, len(self), "ModuleList")]
        self._renumber(mods)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList([*self, *other])

    def insert(self, index, module):
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._renumber(mods)

    def __repr__(self):
        """Runs of identical modules are compressed to `(0-2): 3 x Linear(...)`, as torch prints them."""
        reprs = [repr(m) for m in self]
        if not reprs:
            return f"{self._get_name()}()"
        blocks = []  # [start, end, repr]
        for i, r in enumerate(reprs):
            if blocks and blocks[-1][2] == r:
                blocks[-1][1] = i
            else:
                blocks.append([i, i, r])
        lines = [
            (f"({s}): {r}" if s == e else f"({s}-{e}): {e - s + 1} x {r}").replace("\n", "\n  ") for s, e, r in blocks
        ]
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


class _RegisteredDict(Module):
    """The dict interface over one of a Module's registries (`_modules` or `_parameters`), in insertion
    order; subclasses name the registry and say how `__setitem__` registers a value."""

    _store = None  # attribute name of the registry

    def __init__(self, items=None):
        super().__init__()
        if items is not None:
            self.update(items)

    def _dict(self):
        return self.__dict__[self._store]

    def __getitem__(self, key):
        return self._dict()[key]

    def __delitem__(self, key):
        del self._dict()[key]

    def __contains__(self, key):
        return key in self._dict()

    def __len__(self):
        return len(self._dict())

    def __iter__(self):
        return iter(self._dict())

    def keys(self):
        return self._dict().keys()

    def values(self):
        return self._dict().values()

    def items(self):
        return self._dict().items()

    def update(self, items):
        for k, v in items.items() if hasattr(items, "items") else items:
            self[k] = v

    def pop(self, key):
        value = self._dict()[key]
        del self[key]
        return value

    def clear(self):
        self._dict().clear()


class ModuleDict(_RegisteredDict):
    """A dict of modules that registers them, in insertion order."""

    _store = "_modules"

    def __init__(self, modules=None):  # torch's argument name
        super().__init__(modules)

    def __setitem__(self, key, module):
        self.register_module(key, module)


def _as_parameter(value):
    return value if isinstance(value, Parameter) else Parameter(value)


class ParameterList(Module):
    """A list of Parameters that registers them; plain tensors are wrapped as Parameters."""

    def __init__(self, values=None):
        super().__init__()
        for v in values or ():
            self.append(v)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList(list(self._parameters.values())[idx])
        return self._parameters[str(_index(idx, len(self), "ParameterList"))]

    def __setitem__(self, idx, value):
        self.register_parameter(str(_index(idx, len(self), "ParameterList")), _as_parameter(value))

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter(value))
        return self

    def extend(self, values):
        for v in values:
            self.append(v)
        return self

    def extra_repr(self):
        return "\n".join(_parameter_line(k, p, repr(p.dtype)) for k, p in self._parameters.items())


def _parameter_line(key, p, kind):
    """torch's line for a Parameter in a ParameterList/Dict's repr (indented 2 more than a child module),
    with `kind` its dtype (list) or its tensor type (dict): `  (0): Parameter containing: [distgraph.float32 of size 2x3]`."""
    device = f" ({p.device})" if p.device.type == "cuda" else ""
    return f"  ({key}): Parameter containing: [{kind} of size {'x'.join(map(str, p.shape))}{device}]"


class ParameterDict(_RegisteredDict):
    """A dict of Parameters that registers them; plain tensors are wrapped as Parameters."""

    _store = "_parameters"

    def __init__(self, parameters=None):  # torch's argument name
        super().__init__(parameters)

    def __setitem__(self, key, value):
        self.register_parameter(key, _as_parameter(value))

    def update(self, parameters):
        """As torch's: a plain dict (any Mapping but an OrderedDict or ParameterDict) is added in sorted key order,
        so the order of keys(), named_parameters() and state_dict() is torch's."""
        if isinstance(parameters, Mapping) and not isinstance(parameters, OrderedDict | ParameterDict):
            parameters = sorted(parameters.items())
        super().update(parameters)

    def extra_repr(self):
        return "\n".join(_parameter_line(k, p, p.type()) for k, p in self._parameters.items())
