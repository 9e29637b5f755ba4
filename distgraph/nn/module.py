"""Module: the base of every layer, with PyTorch's registration, traversal, state and hook behaviour.

Parameters, buffers and submodules are found by assignment (`self.fc = Linear(...)`) and kept in
three ordered dicts, so traversal order — and therefore state_dict keys and optimizer parameter
order — is the order of assignment, as in torch. Moving or casting a module (`to`, `double`, ...)
swaps the arrays inside the existing Parameters, so an optimizer built before the move still holds
the model's parameters.
"""

from collections import OrderedDict

from distgraph import dtypes
from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import DTypeError
from distgraph.nn.hooks import (  # noqa: F401  (register_module_*: torch's nn.modules.module names)
    RemovableHandle,
    _global_buffer_registration_hooks,
    _global_module_registration_hooks,
    _global_parameter_registration_hooks,
    add_hook,
    call_with_hooks,
    global_hook_ids,
    register_module_buffer_registration_hook,
    register_module_forward_hook,
    register_module_forward_pre_hook,
    register_module_full_backward_hook,
    register_module_full_backward_pre_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
    run_registration_hooks,
)
from distgraph.nn.module_state import ModuleState, StateDictError  # noqa: F401  (StateDictError: nn's public name)
from distgraph.nn.parameter import Buffer, Parameter
from distgraph.ops.creation import empty_like

__all__ = ["Module", "RemovableHandle", "StateDictError"]


def _check_name(module, name, kind, store):
    """torch's checks of a name about to enter `store`: a string without dots that no other attribute of the
    module has (an instance attribute, another store's entry, or a class attribute such as a property: a
    parametrized `weight`, which would otherwise hide the new entry from every read)."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f'{kind} name can\'t be empty or contain ".", got {name!r}')
    if name not in store and hasattr(module, name):
        raise KeyError(f"attribute '{name}' already exists")


_STATE_HOOKS = (
    "_state_dict_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class Module(ModuleState):
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
        d["_forward_hooks_always_called"] = set()
        d["_backward_hooks"] = OrderedDict()
        d["_backward_pre_hooks"] = OrderedDict()
        d["_is_full_backward_hook"] = None  # True / False once a full / legacy backward hook is registered
        for name in _STATE_HOOKS:  # nn/module_state.py
            d[name] = OrderedDict()

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
            self.register_parameter(name, value)
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' (nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            if _global_module_registration_hooks:
                value = run_registration_hooks(_global_module_registration_hooks, self, name, value)
            self._modules[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' (Module or None expected)"
                )
            if _global_module_registration_hooks:
                value = run_registration_hooks(_global_module_registration_hooks, self, name, value)
            self._modules[name] = value
        elif isinstance(value, Buffer):
            self.register_buffer(name, value, value.persistent)
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            if _global_buffer_registration_hooks:  # torch's assignment goes through register_buffer
                value = run_registration_hooks(_global_buffer_registration_hooks, self, name, value)
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
        _check_name(self, name, "parameter", self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' (Parameter or None)")
        self._forget(name, keep=self._parameters)
        if param is not None and _global_parameter_registration_hooks:
            param = run_registration_hooks(_global_parameter_registration_hooks, self, name, param)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not trained (running stats); non-persistent buffers stay out of state_dict."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name(self, name, "buffer", self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None)")
        self._forget(name, keep=self._buffers)
        if isinstance(tensor, Buffer):
            tensor = Tensor(tensor.array, device=tensor.device)
        if _global_buffer_registration_hooks:
            tensor = run_registration_hooks(_global_buffer_registration_hooks, self, name, tensor)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def register_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _check_name(self, name, "module", self._modules)
        self._forget(name, keep=self._modules)
        if _global_module_registration_hooks:
            module = run_registration_hooks(_global_module_registration_hooks, self, name, module)
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

    def set_submodule(self, target, module, strict=False):
        """torch's: put `module` at the dotted path `target` (its parent must exist; with strict, so must the
        name it replaces)."""
        parent_path, _, name = target.rpartition(".")
        if not name:
            raise ValueError("set_submodule: cannot set the submodule without a target name")
        parent = self.get_submodule(parent_path)
        if strict and name not in parent._modules:
            raise AttributeError(
                f"{type(parent).__name__} has no attribute `{name}` (set_submodule {target!r}, strict)"
            )
        if not isinstance(module, Module):
            raise ValueError(f"set_submodule: `module` is not an nn.Module, found {type(module).__name__}")
        setattr(parent, name, module)

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

    def _apply_tensors(self, fn, recurse=True):
        """Replace every parameter's array by fn's result in place (identity kept), and every buffer."""
        with no_grad():
            for m in self.modules() if recurse else [self]:
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

    def to_empty(self, *, device, recurse=True):
        """torch's: every parameter and buffer moved to `device` as uninitialized storage (the Parameters stay the
        same objects; their values are whatever the new memory holds: load a state_dict next). Here the arrays
        are fresh zeros, as distgraph's `empty` gives."""
        modules = self.modules() if recurse else [self]
        for m in modules:
            m._apply_tensors(lambda t: empty_like(t, device=device), recurse=False)
        return self

    def to(self, *args, **kwargs):
        """`.to(device)`, `.to(dtype)`, `.to(device, dtype)` or `.to(tensor)`: dtype casts floating tensors only."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        memory_format = kwargs.pop("memory_format", None)  # (torch's: the 4-d / 5-d tensors laid out so)
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
            if memory_format in ("channels_last", "channels_last_3d") and t.ndim == 4 + (
                memory_format != "channels_last"
            ):
                t = t.contiguous(memory_format)
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

    def bfloat16(self):
        raise DTypeError(
            f"{type(self).__name__}.bfloat16(): distgraph's arrays are numpy/cupy arrays, which have no bfloat16 "
            "dtype; use half() or float()"
        )

    def type(self, dst_type):
        """Cast every parameter and buffer (integer ones too) to `dst_type`: a dtype or a name such as
        "torch.DoubleTensor"; as torch, a parameter that requires grad cannot become an integer."""

        def cast(t):
            out = t.type(dst_type)
            if t.requires_grad and not (out.is_floating_point() or out.is_complex()):
                raise DTypeError(
                    f"{type(self).__name__}.type({dst_type}): data set to a tensor that requires gradients must be "
                    "floating point or complex dtype"
                )
            return out

        return self._apply_tensors(cast)

    def share_memory(self):
        """torch's share_memory: returns self. It moves tensors to shared memory so that torch.multiprocessing
        workers see one copy; distgraph's cpu tensors are numpy arrays, which its process tools (DataLoader
        workers, Ray) pass by pickling or Ray's object store, so there is nothing to move (Tensor.share_memory_
        is the same no-op)."""
        return self._apply_tensors(lambda t: t.share_memory_())

    # ---- call and hooks -----------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        if (
            self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_hooks
            or self._backward_pre_hooks
            or global_hook_ids
        ):
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) -> None or new args (hook(module, args, kwargs) -> None or (args, kwargs))."""
        return add_hook(self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs, hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """hook(module, args, output) -> None or a replacement output (with_kwargs: (module, args, kwargs, output));
        always_call: it also runs when forward raises (output None), before the error propagates."""
        always = self._forward_hooks_always_called if always_call else None
        return add_hook(self._forward_hooks, self._forward_hooks_with_kwargs, hook, prepend, with_kwargs, always)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """hook(module, grad_output) -> None or new grad_output, before the gradient enters the module."""
        return add_hook(self._backward_pre_hooks, set(), hook, prepend)

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output) -> None or new grad_input, once the inputs' gradients
        are known (see nn/hooks.py for which tensors count and when it fires)."""
        self._backward_hook_kind(True)
        return add_hook(self._backward_hooks, set(), hook, prepend)

    def register_backward_hook(self, hook):
        """torch's deprecated backward hook, run as a full one: torch's hands it the gradients of the last op
        of forward, which are the module's own for a one-op module (an activation), the case it is fit for."""
        self._backward_hook_kind(False)
        return add_hook(self._backward_hooks, set(), hook, False)

    def _backward_hook_kind(self, full):
        if self._is_full_backward_hook is (not full):
            raise RuntimeError(
                "Cannot use both regular backward hooks and full backward hooks on a single Module. "
                "Please use only one of them."
            )
        self.__dict__["_is_full_backward_hook"] = full

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
        for name in ("_backward_hooks", "_backward_pre_hooks", *_STATE_HOOKS):  # state pickled before these existed
            self.__dict__.setdefault(name, OrderedDict())
        self.__dict__.setdefault("_forward_hooks_always_called", set())
        self.__dict__.setdefault("_is_full_backward_hook", None)
