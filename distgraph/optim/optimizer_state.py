"""How an optimizer's saved state comes back: the layout of a state dict checked, and each parameter's saved
values turned into its state here.

Two kinds of state, two rules. A built-in optimizer (one naming a `functional` update) keeps plain arrays, what
its `functional` update reads: a saved array, distgraph Tensor or foreign tensor (a torch checkpoint's)
becomes an array on the parameter's device in its dtype (`to_param`). A user's subclass keeps whatever its
own step stored, as torch's `load_state_dict` does: Tensors stay Tensors, moved to the parameter's device and,
for a floating parameter, cast to its dtype except "step" (`user_state`); dicts, lists and tuples entry by
entry; anything else copied as it is.
"""

import copy
from collections.abc import Mapping

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError


def parts(state_dict, where):
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


def index(key, where):
    """A saved parameter index (an int; a string of one from JSON)."""
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: parameter index {key!r} is not an integer") from None


def user_state(value, param, key=None):
    """A user's subclass's saved state value as its state for `param` (torch's `_cast`; module docstring).
    Always a copy: the optimizer never shares a buffer with the dict it loaded."""
    if isinstance(value, Tensor):
        with no_grad():
            value = value.detach().clone()
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(device=param.device, dtype=param.dtype)
        return value.to(device=param.device)
    if isinstance(value, Mapping):
        return {k: user_state(v, param, k) for k, v in value.items()}
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        return type(value)(user_state(v, param) for v in value)
    return copy.deepcopy(value)


def to_param(value, param, key, name, scalar_keys=(), shape=None):
    """A built-in optimizer's saved state value as this parameter's state: arrays copied to its device and
    dtype, "step" as an int, the optimizer's other scalar keys as floats. An array must have `shape`
    (default: the parameter's)."""
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
