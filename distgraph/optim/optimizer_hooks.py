"""The optimizer's hooks, as torch's: step pre/post hooks (global and per optimizer) and state_dict /
load_state_dict pre/post hooks (per optimizer).

Every hook table is a dict {handle id: hook} in calling order, so a handle's remove() pops its entry and
`prepend` moves the new one to the front. An optimizer's own tables live in its `_hooks` dict (made at
its first registration), so an optimizer without hooks reads an empty one and its step pays one lookup.
`with_step_hooks` wraps each class's `step`; it also marks the optimizer as stepped (`_opt_called`), what
an lr scheduler reads to warn about `scheduler.step()` before `optimizer.step()` (torch wraps the bound
step for that; a flag in the wrapper every step already goes through costs less).
"""

import functools

from distgraph.errors import ConfigError

_GLOBAL_STEP_HOOKS = {"pre": {}, "post": {}}  # register_optimizer_step_*_hook's, every optimizer's
_EMPTY = {}  # what an optimizer without hooks of a kind reads (never written)


def register_optimizer_step_pre_hook(hook):
    """torch's: `hook(optimizer, args, kwargs)` before every optimizer's step (see `Optimizer.register_step_pre_hook`)."""
    return add_hook(_GLOBAL_STEP_HOOKS["pre"], hook)


def register_optimizer_step_post_hook(hook):
    """torch's: `hook(optimizer, args, kwargs)` after every optimizer's step."""
    return add_hook(_GLOBAL_STEP_HOOKS["post"], hook)


def add_hook(hooks, hook, prepend=False):
    """Put `hook` last in `hooks` (first if `prepend`); returns the handle whose remove() takes it out."""
    from distgraph.nn.hooks import RemovableHandle  # (nn's handle; imported here: optim does not need nn to load)

    handle = RemovableHandle(hooks)
    if prepend:
        rest = list(hooks.items())
        hooks.clear()
        hooks[handle.id] = hook
        hooks.update(rest)
    else:
        hooks[handle.id] = hook
    return handle


def own_hooks(optimizer, kind):
    """`optimizer`'s hook table of `kind` ("step_pre", "state_dict_post", ...), made at the first registration."""
    return optimizer.__dict__.setdefault("_hooks", {}).setdefault(kind, {})


def hooks_of(optimizer, kind):
    """`optimizer`'s hooks of `kind`, in calling order (none if it never registered one)."""
    return optimizer.__dict__.get("_hooks", _EMPTY).get(kind, _EMPTY).values()


def with_step_hooks(step):
    """`step` run between the step hooks, as torch's: the global pre-hooks, then the optimizer's own, the step,
    then the optimizer's post-hooks and the global ones. Each hook is `hook(optimizer, args, kwargs)` with args
    starting with the optimizer itself, as torch passes them, and a pre-hook may return (new_args, new_kwargs)
    for the step. A subclass's step that calls super().step() runs them once."""

    @functools.wraps(step)
    def hooked(self, *args, **kwargs):
        self._opt_called = True
        own = self.__dict__.get("_hooks", _EMPTY)  # (hooks_of, inlined: this runs every step)
        pre = [*_GLOBAL_STEP_HOOKS["pre"].values(), *own.get("step_pre", _EMPTY).values()]
        post = own.get("step_post", _EMPTY).values()
        if self.__dict__.get("_in_step") or not (pre or post or _GLOBAL_STEP_HOOKS["post"]):
            return step(self, *args, **kwargs)
        args = (self, *args)
        for hook in pre:
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise ConfigError(
                        f"{type(self).__name__}.step: the pre-hook {hook!r} must return None or a tuple of "
                        f"(new_args, new_kwargs), but got {result!r}"
                    )
                args, kwargs = result
        self._in_step = True
        try:
            out = step(*args, **kwargs)
        finally:
            self._in_step = False
        for hook in [*post, *_GLOBAL_STEP_HOOKS["post"].values()]:
            hook(self, args, kwargs)
        return out

    return hooked
