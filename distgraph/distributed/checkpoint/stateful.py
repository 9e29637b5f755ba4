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

from typing import Protocol, runtime_checkable


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self): ...

    def load_state_dict(self, state_dict): ...


def expand(state_dict):
    """A shallow copy of `state_dict` with each Stateful value (at the top, as torch's) replaced by its
    `state_dict()`."""
    return {k: v.state_dict() if isinstance(v, Stateful) else v for k, v in state_dict.items()}


def hand_back(state_dict, loaded):
    """After a load into `expand`'s copy: each Stateful value given what was loaded for it; every other
    value replaced by what was loaded (a tensor was loaded into in place, an object is the checkpoint's)."""
    for k, v in state_dict.items():
        if isinstance(v, Stateful):
            v.load_state_dict(loaded[k])
        else:
            state_dict[k] = loaded[k]
