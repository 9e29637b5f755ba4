"""Module: the base of every layer, with PyTorch's registration, traversal, state and hook behaviour.

Parameters, buffers and submodules are found by assignment (`self.fc = Linear(...)`) and kept in
three ordered dicts, so traversal order — and therefore state_dict keys and optimizer parameter
order — is the order of assignment, as in torch. Moving or casting a module (`to`, `double`, ...)
swaps the arrays inside the existing Parameters, so an optimizer built before the move still holds
the model's parameters.
"""

from collections import OrderedDict, namedtuple

import numpy as np

from distgraph import dtypes
from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DistgraphError
from distgraph.nn.hooks import RemovableHandle, add_hook, call_with_hooks
from distgraph.nn.parameter import Buffer, Parameter

__all__ = ["Module", "RemovableHandle", "StateDictError"]


def key_errors(own_keys, state_dict, strict, optional=()):
    """(missing, unexpected, errors) of `state_dict` against the keys a module has (the `optional` ones may
    be missing): torch's messages, errors only when strict."""
    own = set(own_keys)
    missing = [k for k in own_keys if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    errors = []  # torch's order: missing keys first
    if strict and missing:
        errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
    if strict and unexpected:
        errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
    return missing, unexpected, errors


class StateDictError(DistgraphError, RuntimeError):
    """load_state_dict found missing or unexpected keys (strict mode) or a shape mismatch (any mode)."""


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


def _check_name(module, name, kind):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f'{kind} name can\'t be empty or contain ".", got {name!r}')
    if name in module.__dict__ and not any(name in d for d in (module._parameters, module._buffers, module._modules)):
        raise KeyError(f"attribute {name!r} already exists")


class Module:
    """Base class for all layers; subclasses set attributes in `__init__` and define `forward`."""

    training = True

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()
        d["_forward_hooks_with_kwargs"] = set()
        d["_forward_pre_hooks"] = OrderedDict()
        d["_forward_pre_hooks_with_kwargs"] = set()
        d["_backward_hooks"] = OrderedDict()
        d["_backward_pre_hooks"] = OrderedDict()

    # ---- registration -------------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if params is None:
            if isinstance(value, Parameter | Module | Buffer):
                raise AttributeError(f"cannot assign {name!r} before Module.__init__() call")
            object.__setattr__(self, name, value)
            return
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' (nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' (Module or None expected)"
                )
            self._modules[name] = None
        elif isinstance(value, Buffer):
            self.register_buffer(name, value, value.persistent)
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep=None):
        """Remove `name` from every store but `keep` (re-assigning keeps a name's place, as in torch)."""
        self.__dict__.pop(name, None)
        for d in (self._parameters, self._buffers, self._modules):
            if d is not keep:
                d.pop(name, None)
        self._non_persistent.discard(name)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a Parameter (or None: a declared but absent parameter, like `bias=False`)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        _check_name(self, name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' (Parameter or None)")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not trained (running stats); non-persistent buffers stay out of state_dict."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name(self, name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None)")
        self._forget(name, keep=self._buffers)
        if isinstance(tensor, Buffer):
            tensor = Tensor(tensor.array, device=tensor.device)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def register_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _check_name(self, name, "module")
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    add_module = register_module

    def _get_path(self, target, store, kind):
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in getattr(mod, store):
            raise AttributeError(f"{type(mod).__name__} has no {kind} `{name}`")
        return getattr(mod, store)[name]

    def get_submodule(self, target):
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no submodule `{part}` (looking up {target!r})")
            mod = mod._modules[part]
        return mod

    def get_parameter(self, target):
        return self._get_path(target, "_parameters", "parameter")

    def get_buffer(self, target):
        return self._get_path(target, "_buffers", "buffer")

    # ---- traversal ----------------------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """Every module of the tree, depth first, each once (unless remove_duplicate=False)."""
        memo = set() if memo is None else memo
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        seen = set()
        for n, m in self._modules.items():
            if m is not None and m not in seen:
                seen.add(m)
                yield n, m

    def children(self):
        return (m for _, m in self.named_children())

    def _named(self, store, prefix, recurse, remove_duplicate):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, t in getattr(m, store).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mp}.{name}" if mp else name), t

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules appears once."""
        return self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    # ---- modes, devices, grads ----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode on this module and every descendant (Dropout, BatchNorm read it)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.__dict__["training"] = mode
        for m in self.children():  # through train() itself, so subclasses that override it are honoured
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (set_to_none) or zero it in place."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                p.grad.requires_grad_(False)
                p.grad.array[...] = 0
                p.grad._vc[0] += 1

    def apply(self, fn):
        """Call fn on every submodule (children first) and then on self, as in torch; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply_tensors(self, fn):
        """Replace every parameter's array by fn's result in place (identity kept), and every buffer."""
        with no_grad():
            for m in self.modules():
                for p in m._parameters.values():
                    if p is None:
                        continue
                    new = fn(p)
                    if new is not p:
                        p.array, p.device = new.array, new.device
                        p._vc[0] += 1
                        if p.grad is not None:
                            p.grad = fn(p.grad)
                for name, b in m._buffers.items():
                    if b is not None and hasattr(b, "materialize"):  # a lazy placeholder stays one (nn/lazy.py)
                        new = fn(b)
                        b.array, b.device = new.array, new.device
                    elif b is not None:
                        m._buffers[name] = fn(b)
        return self

    def to(self, *args, **kwargs):
        """`.to(device)`, `.to(dtype)`, `.to(device, dtype)` or `.to(tensor)`: dtype casts floating tensors only."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"Module.to() got unexpected keyword arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            elif isinstance(a, dtypes.DType):
                dtype = a
            else:
                device = a
        if dtype is not None:
            dtype = dtypes.from_any(dtype)
            if dtype.np.kind not in "fc":
                raise TypeError(f"Module.to only accepts floating point dtypes, but got desired dtype={dtype.name}")

        def move(t):
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.to(device) if device is not None else t

        return self._apply_tensors(move)

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def cpu(self):
        return self.to("cpu")

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    # ---- state --------------------------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters and persistent buffers by dotted name; values share memory with the module (detached)."""
        out = OrderedDict() if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(out, prefix + name + ".", keep_vars)
        return out

    # state a checkpoint may lack (written before it existed: BatchNorm's num_batches_tracked); a module
    # without it in the checkpoint keeps its own value, as torch's _load_from_state_dict for old versions
    _optional_state = ()

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values in place, by name; returns (missing_keys, unexpected_keys).

        Shape mismatches always raise StateDictError; missing/unexpected keys raise it when strict.
        Values may be Tensors or arrays; they are converted to each target's dtype and device. A (1,)
        value loads into a 0-d target as its one element (torch's rule for old checkpoints).
        `assign=True` (torch's): the module takes the checkpoint's tensors themselves, with their dtype
        and device, a parameter as a Parameter keeping the old one's requires_grad (no copy: a file
        loaded with mmap stays mapped). An optimizer built before holds the old parameters.
        """
        own = self.state_dict(keep_vars=True)
        for k, t in own.items():  # a lazy module's placeholder takes the checkpoint's shape (nn/lazy.py)
            if k in state_dict and hasattr(t, "materialize"):
                v = state_dict[k]
                t.materialize(tuple(v.shape) if hasattr(v, "shape") else np.shape(v))
        optional = {f"{p}.{k}" if p else k for p, m in self.named_modules() for k in m._optional_state}
        missing, unexpected, errors = key_errors(own, state_dict, strict, optional)
        for k, t in own.items():
            # a Tensor, an array, or a number / nested list (a 0-d num_batches_tracked saved as an int)
            v = state_dict.get(k)
            shape = None if k not in state_dict else tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
            if shape == (1,) and t.ndim == 0:
                state_dict = {**state_dict, k: v[0]}  # (not the caller's dict)
                shape = ()
            if shape is not None and shape != tuple(t.shape):
                errors.append(
                    f"size mismatch for {k}: copying a param with shape {shape} from checkpoint, "
                    f"the shape in current model is {tuple(t.shape)}."
                )
        if errors:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        with no_grad():
            for k, t in own.items():
                if k not in state_dict:
                    continue
                v = state_dict[k]
                if assign:
                    self._assign(k, t, v)
                    continue
                arr = v.to(t.device).array if isinstance(v, Tensor) else v
                t.array[...] = t.device.xp.asarray(arr, dtype=t.array.dtype)
                t._vc[0] += 1
        return _IncompatibleKeys(missing, unexpected)

    def _assign(self, key, old, value):
        """load_state_dict(assign=True)'s step for one key: the value itself becomes the module's tensor."""
        path, _, name = key.rpartition(".")
        owner = self.get_submodule(path) if path else self
        value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
        if name in owner._parameters:
            if isinstance(value, Parameter):
                value.requires_grad_(old.requires_grad)
            else:
                value = Parameter(value, requires_grad=old.requires_grad)
            owner._parameters[name] = value
        else:
            owner._buffers[name] = value

    # ---- call and hooks -----------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks:
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) -> None or new args (hook(module, args, kwargs) -> None or (args, kwargs))."""
        return add_hook(self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args, output) -> None or a replacement output (with_kwargs: (module, args, kwargs, output))."""
        return add_hook(self._forward_hooks, self._forward_hooks_with_kwargs, hook, prepend, with_kwargs)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """hook(module, grad_output) -> None or new grad_output, before the gradient enters the module."""
        return add_hook(self._backward_pre_hooks, set(), hook, prepend)

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output) -> None or new grad_input, once the inputs' gradients
        are known (see nn/hooks.py for which tensors count and when it fires)."""
        return add_hook(self._backward_hooks, set(), hook, prepend)

    # ---- repr ---------------------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if lines:
            body = extra_lines[0] if len(extra_lines) == 1 and not child_lines else "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"

    def __dir__(self):
        keys = list(super().__dir__()) + list(self._parameters) + list(self._buffers) + list(self._modules)
        return sorted(k for k in set(keys) if not k[0].isdigit())

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name in ("_backward_hooks", "_backward_pre_hooks"):  # state pickled before these existed
            self.__dict__.setdefault(name, OrderedDict())
