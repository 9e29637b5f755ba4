"""A built-in optimizer's `state` as torch's: a defaultdict by parameter of dicts of Tensors.

One truth, the raw state: per parameter a dict of arrays and Python numbers (`ParamState.raw`), what the
`functional` updates read and mutate in place and what `state_dict()`, the compiled step and the distributed
stores exchange. What a user reads is a view of it, made on the first read and cached while the raw value is
the same object: an array as a Tensor sharing its memory (so `zero_()`, `mul_()`, `copy_()` reach the next step),
a number ("step", NAdam's mu_product, ASGD's eta and mu) as a 0-d Tensor of torch's scalar dtype (float32, or
float64 under that default dtype). A user's assignment goes to the raw state (a Tensor's array, a 0-d Tensor's
number), and `arrays()`, what internal code calls, first takes back what a user wrote through a view: a number
changed in place, an array rebound (`.data = ...`). A user's subclass naming no update keeps a plain
`defaultdict(dict)` (Optimizer.state).
"""

import copy
from collections import defaultdict
from collections.abc import Mapping, MutableMapping
from functools import partial
from numbers import Number

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor

_MISSING = object()


def _is_number(value):
    return isinstance(value, Number) and not isinstance(value, bool)


def _scalar_dtype():
    """torch's `_get_scalar_dtype()`: float64 under that default dtype, else float32."""
    return np.float64 if dtypes.get_default_dtype() == dtypes.float64 else np.float32


class ParamState(MutableMapping):
    """One parameter's state: `raw` (arrays and numbers, the truth) read as Tensors (module docstring)."""

    __slots__ = ("raw", "_views", "_scalar_keys")

    def __init__(self, scalar_keys=(), entries=()):
        self.raw, self._views, self._scalar_keys = {}, {}, scalar_keys
        self.update(entries)

    def arrays(self):
        """The raw dict, after taking back what a user wrote through a view since (internal code's accessor)."""
        if self._views:
            self._sync()
        return self.raw

    def _sync(self):
        """Views and raw agree again: what a user wrote through a view (a number changed in place, an array
        rebound by `.data = ...`) goes to raw; a number an update stored since goes into its view in place, so a
        view read before the step reads the new count, as torch's step tensor. Called before internal code reads
        the state and after it wrote it (`settle`)."""
        raw = self.raw
        for key, (orig, view, seen) in list(self._views.items()):
            current = raw.get(key, _MISSING)
            if _is_number(orig):  # (against the view's own value: a float32 one rounds the number)
                value = view.item()
                if value != seen:
                    raw[key] = int(value) if key == "step" else float(value)
                    self._views[key] = (raw[key], view, value)
                elif current is not orig and _is_number(current):
                    view.array[...] = current
                    self._views[key] = (current, view, view.item())
                elif current is not orig:  # deleted, or no longer a number
                    del self._views[key]
            elif current is not orig:  # replaced or deleted inside: the view is stale
                del self._views[key]
            elif view.array is not orig:  # `.data = ...` rebound the view's array
                raw[key] = view.array
                self._views[key] = (view.array, view, None)

    def __getitem__(self, key):
        value = self.arrays()[key]
        cached = self._views.get(key)
        if cached is not None:
            return cached[1]
        if _is_number(value):
            view = Tensor(np.asarray(value, dtype=_scalar_dtype()))
            self._views[key] = (value, view, view.item())
            return view
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            view = Tensor(value)
        else:
            return value  # (None, a list: as stored)
        self._views[key] = (value, view, None)
        return view

    def __setitem__(self, key, value):
        self._views.pop(key, None)
        if isinstance(value, Tensor):
            if key == "step" or key in self._scalar_keys:
                number = value.item()
                value = int(number) if key == "step" else float(number)
            else:
                self._views[key] = (value.array, value, None)
                value = value.array
        self.raw[key] = value

    def __delitem__(self, key):
        self._views.pop(key, None)
        del self.raw[key]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)

    def __contains__(self, key):
        return key in self.raw

    def __repr__(self):
        return repr(dict(self.items()))

    def copy(self):  # dict's: a plain dict of the same Tensors
        return dict(self.items())

    def __or__(self, other):
        return dict(self.items()) | dict(other)

    def __ror__(self, other):
        return dict(other) | dict(self.items())

    def __ior__(self, other):
        self.update(other)
        return self

    def __deepcopy__(self, memo):
        return ParamState(self._scalar_keys, copy.deepcopy(self.arrays(), memo))

    def __reduce__(self):
        return (ParamState, (self._scalar_keys, self.arrays()))


class StateMap(defaultdict):
    """`optimizer.state` of a built-in optimizer: by parameter, a `ParamState` (a missing one reads as empty);
    any mapping stored is taken into one."""

    def __init__(self, scalar_keys=(), entries=()):
        super().__init__(partial(ParamState, scalar_keys))
        self.update(entries)

    def __setitem__(self, param, entries):
        if not isinstance(entries, ParamState):
            entries = self.default_factory(entries.items() if isinstance(entries, Mapping) else entries)
        super().__setitem__(param, entries)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = {} if default is None else default
        return self[key]

    def copy(self):
        return StateMap(self.default_factory.args[0], self)

    def __repr__(self):
        return f"defaultdict(<class 'dict'>, {dict(self)!r})"

    def __reduce__(self):
        return (StateMap, (self.default_factory.args[0], dict(self)))


def settle(entries):
    """After internal code wrote a parameter's raw state: its number views read the new values (`_sync`)."""
    if isinstance(entries, ParamState) and entries._views:
        entries._sync()


def raw(entries):
    """The arrays and numbers of one parameter's state, whichever kind of state it is (internal code's read)."""
    return entries.arrays() if isinstance(entries, ParamState) else entries
