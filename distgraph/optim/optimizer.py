"""Optimizer: torch's param groups, per-parameter state, zero_grad, step and state_dict layout.

The update math is not here: a subclass names a function of `functional.UPDATES` (`update_name`) and
declares its hyperparameters with their defaults (`hyperparameters`); `step()` calls that function on
every parameter's raw array with its group's values, outside autograd. Keeping the classes this thin
is what lets the distributed parameter store run the very same update from `make_optimizer_spec`.

Each subclass's `check(group)` validates a group's values, so `add_param_group` and the constructor
reject the same mistakes (a negative lr, an unknown option) with a message naming the optimizer.

Implementation options (`implementation`: the subset of foreach, fused, capturable and differentiable that
torch's class takes, with torch's defaults) are accepted, kept in every param group and in `state_dict()`
under torch's keys, and never passed to the update: they pick one of torch's kernels, and distgraph has one
vectorised update per optimizer, numerically the same as torch's in float64 whichever kernel torch runs.
- foreach / fused (None, True or False): any value runs that update. As torch, fused=True refuses
  foreach=True, differentiable=True and a non-floating parameter (torch at that parameter's first step,
  distgraph when the group is made), and the pairing is refused in any group, not only the constructor's.
- capturable (True or False): torch's step for CUDA graphs; distgraph's step takes its host scalars the
  same way either way, so True is accepted on every device (torch's CPU step refuses it).
- differentiable: only False. True asks for a step autograd can go through, and distgraph's step writes the
  parameters in place outside autograd, so True is refused rather than silently giving no gradient.
"""

import functools
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from numbers import Real

from distgraph.autograd.grad_mode import enable_grad, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.optim.functional import UPDATES

_GLOBAL_STEP_HOOKS = {
    "pre": OrderedDict(),
    "post": OrderedDict(),
}  # register_optimizer_step_*_hook's, every optimizer's


def register_optimizer_step_pre_hook(hook):
    """torch's: `hook(optimizer, args, kwargs)` before every optimizer's step (see `Optimizer.register_step_pre_hook`)."""
    return _add_step_hook(_GLOBAL_STEP_HOOKS["pre"], hook)


def register_optimizer_step_post_hook(hook):
    """torch's: `hook(optimizer, args, kwargs)` after every optimizer's step."""
    return _add_step_hook(_GLOBAL_STEP_HOOKS["post"], hook)


def _add_step_hook(hooks, hook):
    from distgraph.nn.hooks import RemovableHandle  # (nn's handle; imported here: optim does not need nn to load)

    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


_NO_HOOKS = {"pre": {}, "post": {}}  # what an optimizer without hooks of its own reads (never written)


def _with_step_hooks(step):
    """`step` run between the step hooks, as torch's: the global pre-hooks, then the optimizer's own, the step,
    then the optimizer's post-hooks and the global ones. Each hook is `hook(optimizer, args, kwargs)` with args
    starting with the optimizer itself, as torch passes them, and a pre-hook may return (new_args, new_kwargs)
    for the step. A subclass's step that calls super().step() runs them once."""

    @functools.wraps(step)
    def hooked(self, *args, **kwargs):
        own = self.__dict__.get("_step_hooks", _NO_HOOKS)
        pre, post = [*_GLOBAL_STEP_HOOKS["pre"].values(), *own["pre"].values()], own["post"].values()
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


class Optimizer:
    """Base class: `Optimizer(params, defaults)` where params are Tensors or dicts {"params": [...], **options}."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # every step runs between the step hooks (torch's profile_hook_step)
            cls.step = _with_step_hooks(cls.__dict__["step"])

    update_name = None
    hyperparameters = {}
    implementation = {}  # torch's kernel-choice options of this class, with its defaults (module docstring)
    scalar_state = ()  # state keys torch keeps as 0-d tensors besides "step" (NAdam's mu_product): floats here

    def __init__(self, params, defaults):
        # in the order the subclass lists them (torch's), then any default it left out
        self.defaults = {**defaults, **{k: v for k, v in self.options().items() if k not in defaults}}
        self._check_options(self.defaults, "option")
        self.param_groups = []
        self.state = defaultdict(dict)  # as torch: a parameter without state reads as {}
        if isinstance(params, Tensor):
            raise ConfigError(
                f"{type(self).__name__}: params must be an iterable of Tensors or of dicts, got a single Tensor"
            )
        params = list(params)
        if not params:
            raise ConfigError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    # ---- groups ---------------------------------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group {"params": tensors, option: value, ...}; options it leaves out take the defaults."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise ConfigError(f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ConfigError(f"{name}: a param group needs a 'params' entry")
        group = dict(param_group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise ConfigError(f"{name} can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ConfigError(f"{name} can't optimize a non-leaf Tensor (one computed from others)")
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ConfigError(f"{name}: a param group contains the same parameter more than once")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ConfigError(f"{name}: some parameters appear in more than one parameter group")
        if self.update_name in ("adafactor", "muon"):  # (functional_matrix.WHOLE_PARAMETER)
            from distgraph.optim.functional_matrix import is_shard

            if any(is_shard(p) for p in group["params"]):
                raise ConfigError(
                    f"{name} reads each parameter whole (its shape), but some of these are one rank's shard of a "
                    "FullyShardedDataParallel parameter: its steps would depend on the world size; use an "
                    "elementwise optimizer (Adam, SGD, ...) under FSDP, or wrap the model in DDP"
                )
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_options(group, "param group option")
        self.param_groups.append(group)

    def options(self):
        """Every option a param group holds: the update's hyperparameters and the implementation options."""
        return {**self.hyperparameters, **self.implementation}

    def _check_options(self, options, what):
        name = type(self).__name__
        known = self.options()
        for key in options:
            if key != "params" and key not in known and key not in _SCHEDULER_KEYS:
                raise ConfigError(f"{name}: unknown {what} {key!r}; known: {', '.join(known)}")
        lr = options.get("lr")
        lr = lr.item() if isinstance(lr, Tensor) and lr.numel() == 1 and lr.dtype.is_floating_point else lr
        if isinstance(lr, bool) or not isinstance(lr, Real) or not lr >= 0:  # `not >=`: NaN is refused too
            raise ConfigError(f"{name}: invalid learning rate lr={lr!r} (must be a number >= 0)")
        self._check_implementation(options)
        self.check(options)

    def _check_implementation(self, options):
        """Refuse what distgraph cannot run and the pairings torch refuses (module docstring)."""
        name = type(self).__name__
        for key in self.implementation:
            value = options.get(key)
            if not (isinstance(value, bool) or (value is None and key in ("foreach", "fused"))):
                allowed = "None, True or False" if key in ("foreach", "fused") else "True or False"
                raise ConfigError(f"{name}: invalid {key}={value!r} (must be {allowed})")
        fused, foreach = options.get("fused"), options.get("foreach")
        if options.get("differentiable"):
            raise ConfigError(
                f"{name}: differentiable=True is not supported"
                + (" (and fused=True does not support differentiable=True either)" if fused else "")
                + ": distgraph's step updates the parameters in place outside autograd, so no gradient could "
                "flow through it; use differentiable=False"
            )
        if fused and foreach:
            raise ConfigError(f"{name}: fused=True and foreach=True cannot be set together (torch refuses them)")
        if fused:
            for i, p in enumerate(options.get("params", ())):
                if not p.dtype.is_floating_point:
                    raise ConfigError(
                        f"{name}: fused=True requires floating point parameters, but parameter {i} of the group "
                        f"is {p.dtype}"
                    )

    def update_options(self, group):
        """The keyword arguments of the update function for `group` (also what a remote store runs): its
        hyperparameters, never the implementation options."""
        return {k: group[k].item() if isinstance(group[k], Tensor) else group[k] for k in self.hyperparameters}

    def check(self, options):
        """Subclasses raise ConfigError for values their update cannot use (lr is checked here)."""

    # ---- training -------------------------------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (set_to_none) or zero it in place."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.array[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient; `closure` re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        update = UPDATES[self.update_name]
        with no_grad():
            for group in self.param_groups:
                hyper = self.update_options(group)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    update(p.array, p.grad.array, self.state[p], **hyper)
                    p._vc[0] += 1  # the parameter changed in place: saved-tensor checks must see it
        return loss

    def register_step_pre_hook(self, hook):
        """torch's: `hook(optimizer, args, kwargs)` before this optimizer's step; it may return (new_args,
        new_kwargs) for the step. Returns a handle whose remove() unregisters it."""
        return _add_step_hook(self._own_step_hooks("pre"), hook)

    def register_step_post_hook(self, hook):
        """torch's: `hook(optimizer, args, kwargs)` after this optimizer's step."""
        return _add_step_hook(self._own_step_hooks("post"), hook)

    def _own_step_hooks(self, when):
        """This optimizer's hooks run `when` ("pre" / "post") its step, made at the first registration."""
        return self.__dict__.setdefault("_step_hooks", {"pre": {}, "post": {}})[when]

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """torch's layout: {"state": {param index: {key: array or int}}, "param_groups": [{..., "params":
        [indices]}]}, indices counting parameters across groups in order. Arrays are copies."""
        params = self._params()
        state = {
            i: {k: v.copy() if hasattr(v, "copy") else v for k, v in self.state[p].items()}
            for i, p in enumerate(params)
            if self.state.get(p)  # stateless updates (plain SGD) save nothing, as torch
        }
        groups, start = [], 0
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state and group options saved by `state_dict` (from this or an equal optimizer), all or
        nothing: everything is checked and converted before the optimizer changes.

        Arrays are copied onto each parameter's device with its dtype (torch's rule: "step" stays an int);
        group structure must match, parameter by parameter (torch's errors for a different number of groups,
        or of parameters in a group). As torch, per-parameter state keys this optimizer does not use (an
        Adam's exp_avg loaded into an SGD) are kept, not refused: torch's load takes any key, and a torch
        version or kernel may save keys another lacks; the update reads only its own.
        """
        name = type(self).__name__
        where = f"{name}.load_state_dict"
        groups, saved_state = _parts(state_dict, where)
        if len(groups) != len(self.param_groups):
            raise ConfigError(
                f"{where}: loaded state dict has a different number of parameter groups ({len(groups)}; the "
                f"optimizer has {len(self.param_groups)})"
            )
        for i, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            if len(mine["params"]) != len(theirs["params"]):
                raise ConfigError(
                    f"{where}: loaded state dict contains a parameter group that doesn't match the size of "
                    f"optimizer's group (group {i}: {len(theirs['params'])} parameters in the state dict, "
                    f"{len(mine['params'])} in the optimizer)"
                )
        by_saved_index = {
            _index(saved, where): p
            for g, mine in zip(groups, self.param_groups)
            for saved, p in zip(g["params"], mine["params"])
        }
        state = defaultdict(dict)
        for key, entries in saved_state.items():
            p = by_saved_index.get(_index(key, where))
            if p is None:
                raise ConfigError(f"{where}: state for parameter {key} which no param group lists")
            if not isinstance(entries, Mapping):
                raise ConfigError(f"{where}: the state of parameter {key} must be a dict, got {type(entries).__name__}")
            state[p] = self._load_param_state(p, entries)
        # as torch, the saved group replaces this one (a scheduler's initial_lr made here but not saved goes);
        # an option the saved group lacks (an older torch's) keeps this group's value; every group is checked as
        # the constructor checks its own before anything changes (a torch group may hold differentiable=True)
        known = self.options()
        loaded = []
        for mine, theirs in zip(self.param_groups, groups):
            group = {k: v for k, v in mine.items() if k in known or k == "params"}
            for k, v in theirs.items():
                if k in known or k in _SCHEDULER_KEYS:
                    group[k] = tuple(v) if isinstance(v, list) else v
            self._check_options(group, "param group option in the loaded state dict")
            loaded.append(group)
        for mine, group in zip(self.param_groups, loaded):
            mine.clear()
            mine.update(group)
        self.state = state

    def _load_param_state(self, param, entries):
        """One parameter's saved state as its state here (`_to_param` on each entry); an optimizer whose state
        is not shaped like the parameter (Adafactor's factors, LBFGS's flat history) overrides it."""
        name = type(self).__name__
        return {k: _to_param(v, param, k, name, self.scalar_state) for k, v in entries.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


Optimizer.step = _with_step_hooks(Optimizer.step)


def check_nonnegative(name, options, keys):
    """Raise a ConfigError naming optimizer `name` for the first of `keys` in `options` that is not >= 0.
    Written `not value >= 0` so that NaN is refused as well, as torch's `not 0.0 <= value` refuses it (a NaN
    eps or weight_decay would otherwise turn every parameter into NaN at the first step)."""
    for key in keys:
        if not options[key] >= 0:
            raise ConfigError(f"{name}: invalid {key} value {options[key]} (must be >= 0)")


# Keys a learning-rate scheduler writes into param groups: allowed in groups and saved with them.
_SCHEDULER_KEYS = {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}


def _parts(state_dict, where):
    """A saved optimizer state's (param_groups, state), its layout checked: a dict of the two, each group a
    dict with a "params" list, the state a dict by parameter index."""
    if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
        got = f"keys {sorted(map(str, state_dict))}" if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ConfigError(f"{where}: expected a dict with 'state' and 'param_groups', got {got}")
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"{where}: 'state' must be a dict by parameter index, got {type(state).__name__}")
    if not isinstance(groups, (list, tuple)):
        raise ConfigError(f"{where}: 'param_groups' must be a list, got {type(groups).__name__}")
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or not isinstance(g.get("params"), (list, tuple)):
            raise ConfigError(f"{where}: param group {i} must be a dict with a 'params' list of indices")
    return groups, state


def _index(key, where):
    """A saved parameter index (an int; a string of one from JSON)."""
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: parameter index {key!r} is not an integer") from None


def _to_param(value, param, key, name, scalar_keys=(), shape=None):
    """A saved state value as this parameter's state: arrays copied to its device and dtype, "step" as an
    int, the optimizer's other scalar keys as floats. An array must have `shape` (default: the parameter's)."""
    if isinstance(value, Tensor):
        value = value.array
    elif hasattr(value, "numpy") and not hasattr(value, "__array_namespace__"):
        value = value.numpy()  # a foreign tensor (a torch optimizer's state): read through its numpy()
    if key == "step" or key in scalar_keys:
        try:
            return int(value) if key == "step" else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}.load_state_dict: state {key!r} must be a number, got {value!r}") from None
    if not hasattr(value, "shape"):
        return value  # 0-d arrays are state of a 0-d parameter: copied below, never shared with the caller's
    shape = tuple(param.shape if shape is None else shape)
    if tuple(value.shape) != shape:
        raise ConfigError(
            f"{name}.load_state_dict: state {key!r} has shape {tuple(value.shape)}, "
            + (f"parameter has {shape}" if shape == tuple(param.shape) else f"expected {shape}")
        )
    from distgraph.backend import to_device

    return to_device(value, param.device).astype(param.array.dtype, copy=True)
