"""Stateful: torch.distributed.checkpoint's protocol for an object in a state dict that saves and loads
itself — `dcp.save` stores its `state_dict()`; `dcp.load` loads into its `state_dict()` and hands that to its
`load_state_dict()`. A model and an optimizer are Stateful, and so is the application state torch's DCP
tutorial writes:

    class AppState(Stateful):
        def state_dict(self):
            model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
            return {"model": model_sd, "optim": optim_sd}

        def load_state_dict(self, state_dict):
            set_state_dict(self.model, self.optimizer, model_state_dict=state_dict["model"],
                           optim_state_dict=state_dict["optim"])

    dcp.save({"app": AppState(model, optimizer)}, checkpoint_id=path)
"""

import inspect
from typing import Protocol, runtime_checkable

from distgraph.distributed.checkpoint.state_dict import init_optim_state
from distgraph.optim.optimizer import Optimizer


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self): ...

    def load_state_dict(self, state_dict): ...


def expand(state_dict, checkpoint=None):
    """A shallow copy of `state_dict` with each Stateful value (at the top, as torch's) replaced by its
    `state_dict()`. For a load (`checkpoint`: the keys it holds), an optimizer that has not stepped is given
    its state first (`init_optim_state`: one zero-gradient step at lr 0, the parameters unmoved), so that its
    dict has entries for the checkpoint's state to load into (else `load` would fill its param_groups alone);
    the entries of a parameter the checkpoint holds no state for are left out of it."""
    return {k: _expanded(k, v, checkpoint) if isinstance(v, Stateful) else v for k, v in state_dict.items()}


def _expanded(key, value, checkpoint):
    if checkpoint is None or not isinstance(value, Optimizer) or value.state or _needs_closure(value):
        return value.state_dict()
    init_optim_state(value)
    out = value.state_dict()
    out["state"] = {i: s for i, s in out["state"].items() if any(f"{key}.state.{i}.{k}" in checkpoint for k in s)}
    return out


def _needs_closure(optim):
    """Whether its step cannot run without a closure (LBFGS): no zero-gradient step gives it its state."""
    closure = inspect.signature(optim.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def hand_back(state_dict, loaded):
    """After a load into `expand`'s copy: each Stateful value given what was loaded for it; every other
    value replaced by what was loaded (a tensor was loaded into in place, an object is the checkpoint's)."""
    for k, v in state_dict.items():
        if isinstance(v, Stateful):
            v.load_state_dict(loaded[k])
        else:
            state_dict[k] = loaded[k]
