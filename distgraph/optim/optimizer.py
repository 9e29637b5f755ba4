"""Optimizer: torch's param groups, per-parameter state, zero_grad, step and state_dict layout.

The update math is not here: a subclass names a function of `functional.UPDATES` (`update_name`) and
declares its hyperparameters with their defaults (`hyperparameters`); `step()` calls that function on
every parameter's raw array with its group's values, outside autograd. Keeping the classes this thin
is what lets the distributed parameter store run the very same update from `make_optimizer_spec`.

Each subclass's `check(group)` validates a group's values, so `add_param_group` and the constructor
reject the same mistakes (a negative lr, nesterov without momentum) with a message naming the optimizer.
A param group's keys the class does not declare are kept, as torch keeps them: a group's "name", a
scheduler's "initial_lr", "param_names" from `named_parameters()`; a state dict saves and restores them all.
(The constructor's defaults are the class's own options: an unknown one there is a caller's stray keyword.)

A user's subclass in torch's pattern (`super().__init__(params, defaults)` and its own `step`) names no
built-in update: its state, whatever its step stores, comes back from a state dict as it was stored
(`optimizer_state`), and the base class's `step` raises NotImplementedError for it. If it declares no options
either, its defaults are taken unchecked, as torch's base class takes them.

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

import copy
import warnings
from collections import defaultdict
from collections.abc import Mapping
from numbers import Real

from distgraph.autograd.grad_mode import enable_grad, no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.optim.functional import UPDATES
from distgraph.optim.optimizer_hooks import (  # noqa: F401 (the global step hooks: torch has them here)
    add_hook,
    hooks_of,
    own_hooks,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    with_step_hooks,
)
from distgraph.optim.optimizer_state import index, parts, to_param, user_state
from distgraph.optim.state_tensors import StateMap, raw


class Optimizer:
    """Base class: `Optimizer(params, defaults)` where params are Tensors or dicts {"params": [...], **options}."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # every step runs between the step hooks (torch's profile_hook_step)
            cls.step = with_step_hooks(cls.__dict__["step"])

    update_name = None
    hyperparameters = {}
    implementation = {}  # torch's kernel-choice options of this class, with its defaults (module docstring)
    scalar_state = ()  # state keys torch keeps as 0-d tensors besides "step" (NAdam's mu_product): floats here

    def __init__(self, params, defaults):
        # in the order the subclass lists them (torch's), then any default it left out
        known = self.options()
        self.defaults = {**defaults, **{k: v for k, v in known.items() if k not in defaults}}
        unknown = [k for k in defaults if known and k not in known]
        if unknown:  # a class's own options only (a group takes any key): a wrapper's stray keyword, named here
            raise ConfigError(f"{type(self).__name__}: unknown option {unknown[0]!r}; known: {', '.join(known)}")
        self._check_options(self.defaults)
        self.param_groups = []
        self.state = {}  # as torch, a defaultdict: a parameter without state reads as {} (the `state` setter)
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

    @property
    def state(self):
        """By parameter, its state as torch's: a built-in optimizer's reads as Tensors viewing the raw arrays its
        update mutates (state_tensors); a user's subclass's is a plain defaultdict(dict) of what its step stores."""
        return self._state

    @state.setter
    def state(self, value):
        if self.update_name is None:
            self._state = value if isinstance(value, defaultdict) else defaultdict(dict, value)
        else:
            self._state = value if isinstance(value, StateMap) else StateMap(self.scalar_state, value)

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
        group["params"] = ps = [ps] if isinstance(ps, Tensor) else list(ps)
        if any(isinstance(p, tuple) for p in ps):  # named_parameters(): (name, tensor) pairs, as torch takes
            if not all(isinstance(p, tuple) for p in ps):
                raise ConfigError(
                    f"{name}: all optimizer params should be with/without names. Some param names are missing"
                )
            group["params"], group["param_names"] = [p[1] for p in ps], [p[0] for p in ps]
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise ConfigError(f"{name} can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ConfigError(f"{name} can't optimize a non-leaf Tensor (one computed from others)")
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            warnings.warn(  # torch's words: a warning for now, its step updates such a parameter twice
                "optimizer contains a parameter group with duplicate parameters; in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                UserWarning,
                stacklevel=3,
            )
        for g in self.param_groups:
            if ("param_names" in group) != ("param_names" in g):
                raise ConfigError(
                    f"{name}: all optimizer param groups should be with/without names. cannot add param group "
                    f"{'with' if 'param_names' in group else 'without'} names to the optimizer"
                )
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
        self._check_options(group)
        self.param_groups.append(group)

    def options(self):
        """Every option a param group holds: the update's hyperparameters and the implementation options."""
        return {**self.hyperparameters, **self.implementation}

    def _check_options(self, options):
        """Check the values of the options this class declares. Other keys are the user's (a group's "name",
        a scheduler's "initial_lr"): kept, never refused, as torch keeps them. A user's subclass that declares
        no options is not checked at all: as torch's base class, it takes any defaults and its step reads them."""
        if not self.options():
            return
        name = type(self).__name__
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
        if self.update_name is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not define step(): a subclass of Optimizer that names no built-in "
                "update (`update_name`) must implement its own step(closure=None)"
            )
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        update, state = UPDATES[self.update_name], self._state
        with no_grad():
            for group in self.param_groups:
                hyper = self.update_options(group)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    entry = state[p]
                    update(p.array, p.grad.array, entry.arrays(), **hyper)
                    if entry._views:  # a number view held from before reads the new step, as torch's
                        entry._sync()
                    p._vc[0] += 1  # the parameter changed in place: saved-tensor checks must see it
        return loss

    def note_step(self):
        """Record that this optimizer's update ran somewhere else than its step(): in a compiled training step's
        graph, on the Ray workers. An lr scheduler's first step warns when the optimizer has not stepped (torch's
        order warning, lr_scheduler.py), and those updates went past the step() that records it."""
        self._opt_called = True

    # ---- hooks (optimizer_hooks) ------------------------------------------------------------------------------
    def register_step_pre_hook(self, hook):
        """torch's: `hook(optimizer, args, kwargs)` before this optimizer's step; it may return (new_args,
        new_kwargs) for the step. Returns a handle whose remove() unregisters it."""
        return add_hook(own_hooks(self, "step_pre"), hook)

    def register_step_post_hook(self, hook):
        """torch's: `hook(optimizer, args, kwargs)` after this optimizer's step."""
        return add_hook(own_hooks(self, "step_post"), hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """torch's: `hook(optimizer)` before `state_dict()` builds the dict (first of them all if `prepend`)."""
        return add_hook(own_hooks(self, "state_dict_pre"), hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """torch's: `hook(optimizer, state_dict)` on the dict `state_dict()` built; it may change it in place or
        return a new one, which is what the next hook sees and `state_dict()` returns."""
        return add_hook(own_hooks(self, "state_dict_post"), hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """torch's: `hook(optimizer, state_dict)` before `load_state_dict` reads it, given a shallow copy of the
        caller's dict; it may change that in place or return a new one, which is what gets loaded."""
        return add_hook(own_hooks(self, "load_state_dict_pre"), hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """torch's: `hook(optimizer)` after `load_state_dict` has loaded."""
        return add_hook(own_hooks(self, "load_state_dict_post"), hook, prepend)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """torch's layout: {"state": {param index: {key: array or int}}, "param_groups": [{..., "params":
        [indices]}]}, indices counting parameters across groups in order (a parameter listed twice in its group
        gets its last index both times, as torch's). Arrays are copies; every group key is saved (its "param_names" too).
        The state_dict hooks run before and after, as torch's."""
        for hook in hooks_of(self, "state_dict_pre"):
            hook(self)
        indices, groups, start = {}, [], 0
        for g in self.param_groups:
            for i, p in enumerate(g["params"], start):
                indices[id(p)] = i
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = [indices[id(p)] for p in g["params"]]
            start += len(g["params"])
            groups.append(d)
        state = {
            indices[id(p)]: {k: v.copy() if hasattr(v, "copy") else v for k, v in raw(self.state[p]).items()}
            for p in {id(p): p for p in self._params()}.values()
            if self.state.get(p)  # stateless updates (plain SGD) save nothing, as torch
        }
        state_dict = {"state": state, "param_groups": groups}
        for hook in hooks_of(self, "state_dict_post"):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict):
        """Restore state and group options saved by `state_dict` (from this or an equal optimizer), all or
        nothing: everything is checked and converted before the optimizer changes.

        Arrays are copied onto each parameter's device with its dtype (torch's rule: "step" stays an int);
        group structure must match, parameter by parameter (torch's errors for a different number of groups,
        or of parameters in a group). As torch, per-parameter state keys this optimizer does not use (an
        Adam's exp_avg loaded into an SGD) are kept, not refused: torch's load takes any key, and a torch
        version or kernel may save keys another lacks; the update reads only its own. The load_state_dict
        hooks run before (on a shallow copy of `state_dict`) and after, as torch's.
        """
        name = type(self).__name__
        where = f"{name}.load_state_dict"
        state_dict = dict(state_dict) if isinstance(state_dict, Mapping) else state_dict
        for hook in hooks_of(self, "load_state_dict_pre"):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups, saved_state = parts(state_dict, where)
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
            index(saved, where): p
            for g, mine in zip(groups, self.param_groups)
            for saved, p in zip(g["params"], mine["params"])
        }
        state = {}
        for key, entries in saved_state.items():
            p = by_saved_index.get(index(key, where))
            if p is None:
                raise ConfigError(f"{where}: state for parameter {key} which no param group lists")
            if not isinstance(entries, Mapping):
                raise ConfigError(f"{where}: the state of parameter {key} must be a dict, got {type(entries).__name__}")
            state[p] = self._load_param_state(p, entries)
        # as torch, the saved group replaces this one, every key of it (a user's "name", SWALR's "swa_lr"; a
        # scheduler's initial_lr made here but not saved goes) and this group's param_names where it has none;
        # an option the saved group lacks (an older torch's) keeps this group's value; every group is checked as
        # the constructor checks its own before anything changes (a torch group may hold differentiable=True)
        known = self.options()
        loaded = []
        for mine, theirs in zip(self.param_groups, groups):
            group = {k: v for k, v in mine.items() if k in known or k in ("params", "param_names")}
            for k, v in theirs.items():
                if k != "params":
                    group[k] = tuple(v) if k in known and isinstance(v, list) else copy.deepcopy(v)
            self._check_options(group)
            loaded.append(group)
        for mine, group in zip(self.param_groups, loaded):
            mine.clear()
            mine.update(group)
        self.state = state
        for hook in hooks_of(self, "load_state_dict_post"):
            hook(self)

    def _load_param_state(self, param, entries):
        """One parameter's saved state as its state here (optimizer_state's docstring: `to_param` on each entry
        of a built-in update's, `user_state` for a class naming none: a user's); an optimizer whose state is not shaped
        like the parameter (Adafactor's factors, LBFGS's flat history) overrides it."""
        if self.update_name is None:
            return user_state(dict(entries), param)
        name = type(self).__name__
        return {k: to_param(v, param, k, name, self.scalar_state) for k, v in entries.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


Optimizer.step = with_step_hooks(Optimizer.step)


def check_nonnegative(name, options, keys):
    """Raise a ConfigError naming optimizer `name` for the first of `keys` in `options` that is not >= 0.
    Written `not value >= 0` so that NaN is refused as well, as torch's `not 0.0 <= value` refuses it (a NaN
    eps or weight_decay would otherwise turn every parameter into NaN at the first step)."""
    for key in keys:
        if not options[key] >= 0:
            raise ConfigError(f"{name}: invalid {key} value {options[key]} (must be >= 0)")
