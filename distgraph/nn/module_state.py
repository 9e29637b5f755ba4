"""Module state dicts: torch's per-module recursion, with its extension points and hooks.

`state_dict()` walks the module tree as torch does. At each module: its state-dict pre-hooks, then
`_save_to_state_dict` (its own parameters, its persistent buffers and, where the class defines
`get_extra_state`, that value under `<prefix>_extra_state`), then each child's `state_dict`, then its
post-hooks. A dict the call creates carries `_metadata`: `{"version": cls._version}` for every module
prefix, so a later load knows which layout each module's entries were written in.

`load_state_dict` walks the tree the same way. Each module's `_load_from_state_dict` sees the entries
under its prefix and the metadata saved for it (empty for a plain dict: an old checkpoint, to which a
class may add what its older versions lacked, as BatchNorm adds `num_batches_tracked`).

Unlike torch's, a load is all or nothing: it checks every entry first (the keys when strict, each value's
type, its dtype, its shape) and copies nothing until all of them pass, so a bad checkpoint raises one
StateDictError listing every problem (torch's "Error(s) in loading state_dict for X:" message) and leaves
the module as it was. (torch collects the same messages but has copied the entries that fit by then.) The
walk records each write (a copy, an `assign`, a lazy placeholder's `materialize`, a `set_extra_state`) and
the root runs them once everything is checked. User code that runs after the writes (the load post-hooks,
which torch lets edit the key lists a strict load then raises for; a `set_extra_state`, which may refuse its
value) could still fail: a tree that has either keeps a copy of its state during the load and puts it back
if the load raises. Post-hooks run once all the writes are done, in torch's order (each module's after its
children's), and see the complete key lists.
"""

from collections import OrderedDict, namedtuple
from collections.abc import Mapping
from contextvars import ContextVar
from functools import partial

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.size import Size
from distgraph.autograd.tensor import Tensor
from distgraph.backend import on
from distgraph.errors import DistgraphError
from distgraph.nn.hooks import RemovableHandle
from distgraph.nn.parameter import Parameter

__all__ = ["ModuleState", "StateDictError", "key_errors"]

EXTRA_STATE_KEY = "_extra_state"
# the writes of the load_state_dict in progress, run once every entry is checked (module docstring); None
# outside one (a direct call of _load_from_state_dict writes at once)
_PENDING_WRITES = ContextVar("distgraph_pending_state_writes", default=None)


class StateDictError(DistgraphError, RuntimeError):
    """load_state_dict found missing or unexpected keys (strict mode) or a shape mismatch (any mode)."""


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


def key_errors(own_keys, state_dict, strict, optional=()):
    """(missing, unexpected, errors) of `state_dict` against the keys a model has (the `optional` ones may
    be missing): torch's messages, errors only when strict. (FSDP's loaders check their flat keys here.)"""
    own = set(own_keys)
    missing = [k for k in own_keys if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    return missing, unexpected, _key_messages(missing, unexpected) if strict else []


def _key_messages(missing, unexpected):
    """torch's messages for missing and unexpected keys, missing first."""
    out = []
    if missing:
        out.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
    if unexpected:
        out.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
    return out


def size_mismatch(key, shape, current):
    """torch's message for a checkpoint entry of another shape, its shapes written as torch.Size([4, 5])."""
    return (
        f"size mismatch for {key}: copying a param with shape {Size(shape)!r} from checkpoint, the shape in "
        f"current model is {Size(current)!r}."
    )


def _as_loadable(key, value):
    """(value, None) where `value` can fill a tensor: a Tensor, an array (numpy's or the device's), or a
    number / nested list / foreign tensor (torch's) read as a numpy array; else (None, torch's message
    naming the key and what it received)."""
    if isinstance(value, Tensor):
        return value, None
    try:
        np.dtype(value.dtype)  # an array of a namespace numpy knows the dtypes of (numpy's, cupy's): as it is
        arr = value if hasattr(value, "shape") else np.asarray(value)
    except (AttributeError, TypeError):
        try:
            arr = np.asarray(value)  # a number, nested lists, a torch tensor (zero-copy)
        except Exception as e:  # ragged lists, a tensor numpy cannot read (torch's bfloat16)
            return None, _type_message(key, f"{type(value)} ({e})")
    if np.dtype(arr.dtype).kind not in "biufc":  # bool, int, uint, float, complex
        converted = arr is not value and not hasattr(value, "dtype")  # a str, None, a dict, ...: its type says it
        return None, _type_message(key, type(value) if converted else f"{type(value)} of dtype {arr.dtype}")
    return arr, None


def _type_message(key, what):
    return (
        f'While copying the parameter named "{key}", expected a Tensor, an array or a number from checkpoint but '
        f"received {what}"
    )


def _defer(write, *args):
    """Run write(*args) when the load in progress has checked everything (at once outside a load)."""
    pending = _PENDING_WRITES.get()
    if pending is None:
        write(*args)
    else:
        pending.append(partial(write, *args))


class ModuleState:
    """Module's state-dict methods (a base of Module). The hook dicts are made in Module.__init__."""

    _version = 1  # written to state_dict()._metadata; a class that changes its entries raises it
    # state a checkpoint may lack, for FSDP's flat loader (distributed/fsdp_sharded.py); Module's own
    # loader asks each class's _load_from_state_dict instead
    _optional_state = ()

    # ---- saving -------------------------------------------------------------------------------------------
    def get_extra_state(self):
        """What to save beyond parameters and buffers under `_extra_state`; define it with set_extra_state."""
        raise RuntimeError(
            "Reached a code path in Module.get_extra_state() that should never be called. Please file an issue "
            "at https://github.com/pytorch/pytorch/issues/new?template=bug-report.yml to report this bug."
        )

    def set_extra_state(self, state):
        """Restore what get_extra_state returned."""
        raise RuntimeError(
            "Reached a code path in Module.set_extra_state() that should never be called. Please file an issue "
            "at https://github.com/pytorch/pytorch/issues/new?template=bug-report.yml to report this bug."
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """This module's own entries (not its children's): override for class-specific saving."""
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                destination[prefix + name] = b if keep_vars else b.detach()
        if type(self).get_extra_state is not ModuleState.get_extra_state:
            destination[prefix + EXTRA_STATE_KEY] = self.get_extra_state()

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters, persistent buffers and extra state by dotted name; tensors share memory with the
        module (detached unless keep_vars). A dict made here has `_metadata` (module docstring)."""
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()
        local_metadata = {"version": self._version}
        metadata = getattr(destination, "_metadata", None)
        if metadata is not None:
            metadata[prefix[:-1]] = local_metadata
        for hook in self._state_dict_pre_hooks.values():
            hook(self, prefix, keep_vars)
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        for hook in self._state_dict_hooks.values():
            result = hook(self, destination, prefix, local_metadata)
            if getattr(hook, "_from_public_api", False):
                if result is not None:
                    raise RuntimeError("state_dict post-hook must return None")
            elif result is not None:
                destination = result
        return destination

    def register_state_dict_pre_hook(self, hook):
        """hook(module, prefix, keep_vars) -> None, before the module's state_dict runs."""
        return _add(self._state_dict_pre_hooks, hook)

    def register_state_dict_post_hook(self, hook):
        """hook(module, state_dict, prefix, local_metadata) -> None, after it: may edit the dict in place."""
        hook._from_public_api = True
        return _add(self._state_dict_hooks, hook)

    def _register_state_dict_hook(self, hook):
        """torch's older post-hook: a dict it returns replaces the result (at the root call only)."""
        if getattr(hook, "_from_public_api", False):
            raise RuntimeError(
                "Cannot register the same function as the state dict post hook that was previously registered "
                "via register_state_dict_post_hook"
            )
        return _add(self._state_dict_hooks, hook)

    # ---- loading ------------------------------------------------------------------------------------------
    def register_load_state_dict_pre_hook(self, hook):
        """hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        -> None, before the module's _load_from_state_dict reads its entries (it may edit the dict)."""
        return self._register_load_state_dict_pre_hook(hook, with_module=True)

    def _register_load_state_dict_pre_hook(self, hook, with_module=False):
        return _add(self._load_state_dict_pre_hooks, (hook, with_module))

    def register_load_state_dict_post_hook(self, hook):
        """hook(module, incompatible_keys) -> None, once the module and its children are loaded; it may
        edit incompatible_keys' lists in place (what a strict load then raises for)."""
        return _add(self._load_state_dict_post_hooks, hook)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Load this module's own entries (not its children's) from `state_dict` (a copy: it may be edited),
        recording missing / unexpected keys and error messages; override for class-specific loading."""
        for hook, with_module in self._load_state_dict_pre_hooks.values():
            args = (state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            hook(self, *args) if with_module else hook(*args)
        local = [(n, p) for n, p in self._parameters.items() if p is not None]
        local += [(n, b) for n, b in self._buffers.items() if b is not None and n not in self._non_persistent]
        assign = local_metadata.get("assign_to_params_buffers", False)
        with no_grad():  # (a (1,) Tensor's element is taken outside autograd)
            for name, t in local:  # checks only: the writes are deferred (module docstring)
                key = prefix + name
                if key not in state_dict:
                    if strict:
                        missing_keys.append(key)
                    continue
                value, problem = _as_loadable(key, state_dict[key])
                if problem:
                    error_msgs.append(problem)
                    continue
                shape = tuple(value.shape)
                lazy = hasattr(t, "materialize")  # a lazy placeholder takes the checkpoint's shape (nn/lazy.py)
                if not lazy and shape == (1,) and t.ndim == 0:  # torch's rule for checkpoints before 0-d tensors
                    value, shape = value[0], ()
                if not lazy and shape != tuple(t.shape):
                    error_msgs.append(size_mismatch(key, shape, t.shape))
                    continue
                _defer(self._write, name, t, value, shape if lazy else None, assign)
        extra_key = prefix + EXTRA_STATE_KEY
        if type(self).set_extra_state is not ModuleState.set_extra_state:
            if extra_key in state_dict:
                _defer(self.set_extra_state, state_dict[extra_key])
            elif strict:
                missing_keys.append(extra_key)
        elif strict and extra_key in state_dict:
            unexpected_keys.append(extra_key)
        if strict:
            names = {n for n, _ in local}
            for key in state_dict:
                if key.startswith(prefix) and key != extra_key:
                    head, dot, _ = key[len(prefix) :].partition(".")
                    if head not in (self._modules if dot else names):
                        unexpected_keys.append(key)

    def _write(self, name, t, value, materialize_shape, assign):
        """One checked entry into tensor `t` (this module's `name`): a lazy placeholder materialized first,
        then the value copied in place (converted to t's dtype and device) or, with assign, taking its place."""
        if materialize_shape is not None:
            t.materialize(materialize_shape)
        if assign:
            self._assign(name, t, value)
            return
        with no_grad():
            arr = value.to(t.device).array if isinstance(value, Tensor) else value
            with on(t.device):  # (cupy copies on its current GPU: the target's; on cpu a no-op)
                t.array[...] = t.device.xp.asarray(arr, dtype=t.array.dtype)
            t._vc[0] += 1

    def _assign(self, name, old, value):
        """load_state_dict(assign=True)'s step for one entry: the value itself becomes the module's tensor
        (a parameter as a Parameter keeping the old one's requires_grad)."""
        value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
        if name in self._parameters:
            if isinstance(value, Parameter):
                value.requires_grad_(old.requires_grad)
            else:
                value = Parameter(value, requires_grad=old.requires_grad)
            self._parameters[name] = value
        else:
            self._buffers[name] = value

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values in place, by name, module by module, all or nothing (module docstring); returns
        (missing_keys, unexpected_keys).

        A value that is not a Tensor, an array or a number (list) of a numeric dtype, and a shape mismatch,
        always raise StateDictError; missing/unexpected keys raise it when strict; one error lists them all
        and nothing is changed. Values are converted to each target's dtype and device. A (1,)
        value loads into a 0-d target as its one element (torch's rule for old checkpoints).
        `assign=True` (torch's): the module takes the checkpoint's tensors themselves, with their dtype
        and device, a parameter as a Parameter keeping the old one's requires_grad (no copy: a file
        loaded with mmap stays mapped). An optimizer built before holds the old parameters.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing, unexpected, errors = [], [], []
        metadata = getattr(state_dict, "_metadata", None)
        state_dict = OrderedDict(state_dict)  # the modules' loaders may edit it, not the caller's dict

        post_hooks = []  # (module, hook) in torch's order: a module's after its children's

        def load(module, local_state, prefix):
            local_metadata = {} if metadata is None else dict(metadata.get(prefix[:-1], {}))
            if assign:
                local_metadata["assign_to_params_buffers"] = True
            module._load_from_state_dict(local_state, prefix, local_metadata, True, missing, unexpected, errors)
            by_child = {}  # the entries under each child's prefix, as torch filters them (in one pass)
            for k, v in local_state.items():
                head, dot, _ = k[len(prefix) :].partition(".")
                if dot and k.startswith(prefix):
                    by_child.setdefault(head, {})[k] = v
            for name, child in module._modules.items():
                if child is not None:
                    load(child, by_child.get(name, {}), prefix + name + ".")
            post_hooks.extend((module, hook) for hook in module._load_state_dict_post_hooks.values())

        def check():
            messages = (_key_messages(missing, unexpected) if strict else []) + errors
            if messages:
                raise StateDictError(
                    f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(messages)
                )

        writes = []
        token = _PENDING_WRITES.set(writes)
        try:
            load(self, state_dict, "")  # the checks: nothing is written yet
        finally:
            _PENDING_WRITES.reset(token)
        if errors or not post_hooks:  # (a post-hook may clear the key lists, never the other errors)
            check()
        saved = _snapshot(self) if post_hooks or _has_extra_state(self) else None  # user code runs below
        try:
            for write in writes:
                write()
            incompatible = _IncompatibleKeys(missing, unexpected)
            for module, hook in post_hooks:
                if hook(module, incompatible) is not None:
                    raise AssertionError(
                        "Hooks registered with ``register_load_state_dict_post_hook`` are not expected to return "
                        "new values, if incompatible_keys need to be modified, it should be done inplace."
                    )
            check()
        except BaseException:
            if saved is not None:
                _restore(saved)
            raise
        return _IncompatibleKeys(missing, unexpected)


def _has_extra_state(module):
    return any(type(m).set_extra_state is not ModuleState.set_extra_state for m in module.modules())


def _snapshot(module):
    """What a load may change, to put back if user code run after its checks raises: each parameter and buffer
    slot of the tree (its store, name, tensor, the tensor's class, device, array and a copy of its values), and
    each module's extra state."""
    out, extra = [], []
    for m in module.modules():
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                kept = None if t is None else (type(t), t.device, t.array, _copy(t))
                out.append((store, name, t, kept))
        if type(m).set_extra_state is not ModuleState.set_extra_state:
            extra.append((m, m.get_extra_state()))
    return out, extra


def _copy(t):
    with on(t.device):  # (cupy copies onto its current GPU: the tensor's)
        return t.array.copy()


def _restore(saved):
    """Put back what `_snapshot` saw: the tensors in their slots, their classes (a lazy placeholder that was
    materialized), devices, arrays and values, then the extra states."""
    slots, extra = saved
    for store, name, t, kept in slots:
        store[name] = t
        if t is not None:
            cls, device, array, values = kept
            t.__class__, t.device, t.array = cls, device, array
            if getattr(array.flags, "writeable", True):  # (a read-only array, mmap-loaded, was not written)
                with on(device):
                    array[...] = values
    for m, state in extra:
        m.set_extra_state(state)


def _add(hooks, hook):
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle
