"""torch.func.functional_call (torch.nn.utils.stateless): run a Module with given tensors in place of its
parameters and buffers.

The given tensors are swapped into the modules' parameter/buffer stores for the call and the originals
put back afterwards, also when the call raises, so the module is never left holding them. As torch's,
with tie_weights a value given for one of several names of the same tensor is used for all of them.
"""

import contextlib
from collections.abc import Sequence


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """`module(*args, **kwargs)` with `parameter_and_buffer_dicts` ({dotted name: tensor}, or a sequence of
    such dicts) in place of the module's own parameters and buffers."""
    if isinstance(parameter_and_buffer_dicts, dict):
        values = parameter_and_buffer_dicts
    elif isinstance(parameter_and_buffer_dicts, Sequence):
        if not all(isinstance(d, dict) for d in parameter_and_buffer_dicts):
            raise ValueError("Expected all elements of parameter_and_buffer_dicts to be dictionaries")
        counts = {}
        for d in parameter_and_buffer_dicts:
            for k in d:
                counts[k] = counts.get(k, 0) + 1
        repeated = [k for k, n in counts.items() if n > 1]
        if repeated:
            raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional call is ambiguous")
        values = {k: v for d in parameter_and_buffer_dicts for k, v in d.items()}
    else:
        raise ValueError(
            "Expected parameter_and_buffer_dicts to be a dict, or a list/tuple of dicts, "
            f"but got {type(parameter_and_buffer_dicts)}"
        )
    if kwargs is None:
        kwargs = {}
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    with _reparametrize(module, values, tie_weights, strict):
        return module(*args, **kwargs)


def _named_tensors(module):
    """{dotted name: tensor} for every parameter and buffer, each name of a shared one included."""
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    return named


def _untie(module, values):
    """`values` extended to every name of a tied tensor one of whose names it gives (torch's rule)."""
    names_of = {}
    for name, t in _named_tensors(module).items():
        names_of.setdefault(id(t), set()).add(name)
    tied = {n: names for names in names_of.values() if len(names) > 1 for n in names}
    given = [n for n in values if n in tied]
    out = dict(values)
    for name in given:
        names = tied[name]
        if len(names.intersection(given)) > 1 and len({id(values[n]) for n in names if n in values}) != 1:
            raise ValueError(
                f"functional_call got multiple values for keys {sorted(names)}, which are tied. Consider using "
                "tie_weights=False"
            )
        for n in names:
            out[n] = values[name]
    return out


@contextlib.contextmanager
def _reparametrize(module, values, tie_weights, strict):
    if tie_weights:
        values = _untie(module, values)
    if strict:
        known = _named_tensors(module)
        unexpected = [k for k in values if k not in known]
        missing = [k for k in known if k not in values]
        msgs = []
        if unexpected:
            msgs.append(f"Unexpected key(s): {', '.join(map(repr, unexpected))}.")
        if missing:
            msgs.append(f"Missing key(s): {', '.join(map(repr, missing))}.")
        if msgs:
            raise RuntimeError(
                "Error(s) in reparametrizing for {}:\n\t{}".format(module._get_name(), "\n\t".join(msgs))
            )
    undo = []  # (store dict, name, old value or _ABSENT), in the order swapped
    try:
        for key, value in values.items():
            owner_path, _, name = key.rpartition(".")
            owner = module.get_submodule(owner_path)
            store = _store_of(owner, name)
            undo.append((store, name, store.get(name, _ABSENT)))
            store[name] = value
        yield
    finally:
        for store, name, old in reversed(undo):
            if old is _ABSENT:
                del store[name]
            else:
                store[name] = old


_ABSENT = object()


def _store_of(owner, name):
    """The store (`_parameters` or `_buffers`) holding `name`; an unknown name goes with the parameters
    for the call (torch sets it as an attribute), removed again afterwards."""
    if name in owner._buffers:
        return owner._buffers
    return owner._parameters


__all__ = ["functional_call"]
