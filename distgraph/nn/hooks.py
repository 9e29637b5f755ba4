"""Module hooks: removal handles, the hooked call path, and torch's full backward hooks.

`Module.__call__` comes here only when a hook is registered, so a plain call pays nothing. torch's global
hooks (`register_module_forward_hook`, ...: nn.modules.module's names) run for every module call, before
the module's own; every registered one's id is in `global_hook_ids`, the one set `__call__` checks for them.
The global registration hooks (`register_module_parameter_registration_hook`, ...) see each parameter, buffer
and submodule as it is registered, after torch's checks, and may replace it.

Full backward hooks follow torch's `BackwardHook`: the module's positional Tensor arguments and its
Tensor outputs (a Tensor or a tuple of them, namedtuples included) each pass through one identity
Function, `BackwardHookFunction`. In backward the output-side node sees every output's gradient at
once (None where none arrived): the backward pre-hooks run there and may replace them, and they flow
on into the module. The input-side node sees the gradients of every input at once: the full hooks run
there, `hook(module, grad_input, grad_output)`, and may replace grad_input. When no input requires
grad, the full hooks run at the output side with grad_input all None (torch warns the same way). A
module that returns anything else (a dict) gets a warning and no backward hook calls, as in torch.
"""

import warnings
from collections import OrderedDict

from distgraph.autograd import grad_mode
from distgraph.autograd.custom import Function
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError


class RemovableHandle:
    """What register_*_hook returns: `handle.remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks, *extra):
        self.hooks, self.extra = hooks, extra
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)
        for d in self.extra:
            d.discard(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def add_hook(hooks, kw_ids, hook, prepend, with_kwargs=False, always_ids=None):
    """Register `hook` (its id also in kw_ids when with_kwargs, and in always_ids when given)."""
    handle = RemovableHandle(hooks, kw_ids, *(() if always_ids is None else (always_ids,)))
    hooks[handle.id] = hook
    if with_kwargs:
        kw_ids.add(handle.id)
    if always_ids is not None:
        always_ids.add(handle.id)
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


global_hook_ids = set()
_global_forward_pre_hooks = OrderedDict()
_global_forward_hooks = OrderedDict()
_global_forward_hooks_with_kwargs = set()
_global_forward_hooks_always_called = set()
_global_backward_pre_hooks = OrderedDict()
_global_backward_hooks = OrderedDict()


def _add_global(hooks, hook, *id_sets):
    handle = RemovableHandle(hooks, global_hook_ids, *id_sets)
    hooks[handle.id] = hook
    for ids in (global_hook_ids, *id_sets):
        ids.add(handle.id)
    return handle


def register_module_forward_pre_hook(hook):
    """A forward pre-hook (Module.register_forward_pre_hook's) that runs for every module, before its own."""
    return _add_global(_global_forward_pre_hooks, hook)


def register_module_forward_hook(hook, *, with_kwargs=False, always_call=False):
    """A forward hook (Module.register_forward_hook's) that runs for every module, before its own."""
    id_sets = [_global_forward_hooks_with_kwargs] if with_kwargs else []
    id_sets += [_global_forward_hooks_always_called] if always_call else []
    return _add_global(_global_forward_hooks, hook, *id_sets)


def register_module_full_backward_pre_hook(hook):
    """A full backward pre-hook that runs for every module called after it is registered, before its own."""
    return _add_global(_global_backward_pre_hooks, hook)


def register_module_full_backward_hook(hook):
    """A full backward hook that runs for every module called after it is registered, before its own."""
    return _add_global(_global_backward_hooks, hook)


_global_buffer_registration_hooks = OrderedDict()
_global_module_registration_hooks = OrderedDict()
_global_parameter_registration_hooks = OrderedDict()


def _add_registration(hooks, hook):
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


def clear_global_hooks():
    """Drop every global hook (a warm process's next launch starts without its last function's: process_settings)."""
    for registry in (_global_forward_pre_hooks, _global_forward_hooks, _global_forward_hooks_with_kwargs,
                     _global_forward_hooks_always_called, _global_backward_pre_hooks, _global_backward_hooks,
                     global_hook_ids, _global_buffer_registration_hooks, _global_module_registration_hooks,
                     _global_parameter_registration_hooks):  # fmt: skip
        registry.clear()


def register_module_buffer_registration_hook(hook):
    """hook(module, name, buffer) -> None or a replacement, run for every module's register_buffer (buffer
    assignment included, None too)."""
    return _add_registration(_global_buffer_registration_hooks, hook)


def register_module_module_registration_hook(hook):
    """hook(module, name, submodule) -> None or a replacement, run for every module's add_module and
    submodule assignment (None too, where the name is a submodule's)."""
    return _add_registration(_global_module_registration_hooks, hook)


def register_module_parameter_registration_hook(hook):
    """hook(module, name, param) -> None or a replacement, run for every module's register_parameter
    (Parameter assignment included; torch skips None)."""
    return _add_registration(_global_parameter_registration_hooks, hook)


def run_registration_hooks(hooks, module, name, value):
    """`value` as the registration hooks leave it: in registration order, each non-None result replaces it
    unchecked (torch's). Callers test `hooks` first, so a registration with none registered pays one check."""
    for hook in hooks.values():
        out = hook(module, name, value)
        if out is not None:
            value = out
    return value


def _forward_hooks(module):
    """(id, hook, with_kwargs, always_call) of the forward hooks of a call: the global ones first."""
    kw, always = module._forward_hooks_with_kwargs, module._forward_hooks_always_called
    return [
        (hid, hook, hid in kw or hid in _global_forward_hooks_with_kwargs,
         hid in always or hid in _global_forward_hooks_always_called)
        for hid, hook in (*_global_forward_hooks.items(), *module._forward_hooks.items())
    ]  # fmt: skip


def call_with_hooks(module, args, kwargs):
    """Module.__call__ when any hook is registered: forward pre-hooks, backward-hook wrapping of the
    inputs, forward, forward hooks, backward-hook wrapping of the outputs (torch's order). When any of it
    raises, the forward hooks registered with always_call that have not run yet run (with the args as
    the pre-hooks left them and output None); an error of theirs becomes a warning, and the first error
    propagates, as in torch."""
    state = {"args": args, "kwargs": kwargs, "out": None, "called": set()}
    try:
        return _call(module, state)
    except Exception:
        for hid, hook, with_kwargs, always in _forward_hooks(module):
            if not always or hid in state["called"]:
                continue
            try:
                a, kw, out = state["args"], state["kwargs"], state["out"]
                res = hook(module, a, kw, out) if with_kwargs else hook(module, a, out)
                state["out"] = state["out"] if res is None else res
            except Exception as e:
                warnings.warn(
                    "module forward hook with ``always_call=True`` raised an exception that was silenced as "
                    f"another error was raised in forward: {e}",
                    stacklevel=2,
                )
        raise


def _call(module, state):
    args, kwargs = state["args"], state["kwargs"]
    for hid, hook in (*_global_forward_pre_hooks.items(), *module._forward_pre_hooks.items()):
        if hid in module._forward_pre_hooks_with_kwargs:
            res = hook(module, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(
                        f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), got {res}"
                    )
                args, kwargs = res
        else:
            res = hook(module, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        state["args"], state["kwargs"] = args, kwargs
    bw = None
    hooks = [*_global_backward_hooks.values(), *module._backward_hooks.values()]
    pre_hooks = [*_global_backward_pre_hooks.values(), *module._backward_pre_hooks.values()]
    if hooks or pre_hooks:
        bw = BackwardHook(module, hooks, pre_hooks)
        args = bw.setup_input_hook(args)
    out = state["out"] = module.forward(*args, **kwargs)
    for hid, hook, with_kwargs, _ in _forward_hooks(module):
        state["called"].add(hid)
        res = hook(module, args, kwargs, out) if with_kwargs else hook(module, args, out)
        if res is not None:
            out = state["out"] = res
    if bw is not None:
        if not isinstance(out, Tensor | tuple):
            warnings.warn(
                "For backward hooks to be called, module output should be a Tensor or a tuple of Tensors "
                f"but received {type(out)}",
                stacklevel=3,
            )
        out = bw.setup_output_hook(out)
    return out


class BackwardHookFunction(Function):
    """Identity on its Tensor arguments; its backward hands the gradients to `on_backward` (a
    BackwardHook's method), whose result flows on. Outputs for inputs without grad are not
    differentiable, so the wrapping never makes a tensor require grad."""

    @staticmethod
    def forward(ctx, on_backward, materialize, *tensors):
        ctx.on_backward = on_backward
        ctx.set_materialize_grads(materialize)
        ctx.mark_non_differentiable(*[t for t in tensors if not t.requires_grad])
        return tensors if len(tensors) > 1 else tensors[0]

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *ctx.on_backward(grads))


def _pack(indices, values, size):
    res = [None] * size
    for i, v in zip(indices, values):
        res[i] = v
    return tuple(res)


class BackwardHook:
    """One hooked call's link between the gradients of its outputs and those of its inputs."""

    def __init__(self, module, hooks, pre_hooks):
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.grad_outputs = None
        self.n_inputs = self.n_outputs = -1
        self.input_index = self.output_index = None

    def _wrap(self, args, on_backward, materialize):
        """args with their Tensors replaced by BackwardHookFunction's outputs, and the Tensors' positions
        (None, args unchanged, when no Tensor requires grad or grad mode is off)."""
        index = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        if not (grad_mode.state.grad_enabled and any(args[i].requires_grad for i in index)):
            return args, None
        new = BackwardHookFunction.apply(on_backward, materialize, *[args[i] for i in index])
        new = new if isinstance(new, tuple) else (new,)
        out = list(args)
        for i, t in zip(index, new):
            out[i] = t
        return (tuple(out) if type(args) is tuple else type(args)(*out)), index

    def setup_input_hook(self, args):
        # torch hands the hooks the input node's results: zeros (not None) for inputs that got no gradient
        res, self.input_index = self._wrap(args, self._on_input_grads, True)
        self.n_inputs = len(args)
        return res

    def setup_output_hook(self, out):
        single = not isinstance(out, tuple)
        res, self.output_index = self._wrap((out,) if single else out, self._on_output_grads, False)
        self.n_outputs = 1 if single else len(out)
        return res[0] if single else res

    def _name(self):
        return type(self.module).__name__

    def _on_output_grads(self, grads):
        self.grad_outputs = _pack(self.output_index, grads, self.n_outputs)
        for hook in self.pre_hooks:
            new = hook(self.module, self.grad_outputs)
            if new is None:
                continue
            if len(new) != len(self.grad_outputs):
                raise AutogradError(
                    f"{self._name()}: backward pre hook returned an invalid number of grad_output, "
                    f"got {len(new)}, but expected {len(self.grad_outputs)}"
                )
            self.grad_outputs = tuple(new)
        local = self.grad_outputs
        if self.input_index is None:  # no input requires grad: the full hooks fire here (torch warns too)
            warnings.warn(
                "Full backward hook is firing when gradients are computed with respect to module outputs "
                "since no inputs require gradients.",
                stacklevel=2,
            )
            for hook in self.hooks:
                res = hook(self.module, (None,) * self.n_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise AutogradError(
                        f"{self._name()}: backward hook for a module where no input requires gradient "
                        "should always return None or None for all gradients."
                    )
            self.grad_outputs = None
        return tuple(local[i] for i in self.output_index)

    def _on_input_grads(self, grads):
        if self.grad_outputs is None:  # the gradient reached the inputs without passing the outputs
            return grads
        res = _pack(self.input_index, grads, self.n_inputs)
        for hook in self.hooks:
            new = hook(self.module, res, self.grad_outputs)
            if new is None:
                continue
            if len(new) != len(res):
                raise AutogradError(
                    f"{self._name()}: backward hook returned an invalid number of grad_input, "
                    f"got {len(new)}, but expected {len(res)}"
                )
            res = tuple(new)
        self.grad_outputs = None
        return tuple(res[i] for i in self.input_index)
