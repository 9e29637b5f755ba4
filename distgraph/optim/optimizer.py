"""Optimizer: param groups, state, zero_grad and torch-layout state_dict; subclasses name their update.

A subclass declares `update_name` (a key of `functional.UPDATES`) and `hyperparameters` (its
defaults); `step()` runs that update on every parameter's array with its group's values.
"""

import copy

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.optim.functional import UPDATES


class Optimizer:
    update_name = None
    hyperparameters = {}

    def __init__(self, params, defaults):
        for key in defaults:
            if key not in self.hyperparameters:
                raise ConfigError(f"{type(self).__name__}: unknown option {key!r}")
        lr = defaults.get("lr")
        if lr is not None and (not isinstance(lr, int | float) or lr < 0):
            raise ConfigError(f"{type(self).__name__}: invalid learning rate {lr!r} (must be a number ≥ 0)")
        self.defaults = {**self.hyperparameters, **defaults}
        self.param_groups = []
        self.state = {}
        params = list(params)
        if not params:
            raise ConfigError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for key in group:
            if key != "params" and key not in self.hyperparameters:
                raise ConfigError(f"{type(self).__name__}: unknown param group option {key!r}")
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise ConfigError(f"{type(self).__name__} can only optimize Tensors, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ConfigError(f"{type(self).__name__}: some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.array[...] = 0

    def step(self, closure=None):
        loss = None
        if closure is not None:
            from distgraph.autograd.grad_mode import enable_grad

            with enable_grad():
                loss = closure()
        update = UPDATES[self.update_name]
        with no_grad():
            for group in self.param_groups:
                hyper = {k: group[k] for k in self.hyperparameters}
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    update(p.array, p.grad.array, self.state.setdefault(p, {}), **hyper)
                    p._vc[0] += 1
        return loss

    def _index(self):
        return {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}

    def state_dict(self):
        """torch's layout: state keyed by parameter index, groups with index lists."""
        index = self._index()
        params = [p for g in self.param_groups for p in g["params"]]
        state = {index[id(p)]: copy.deepcopy(self.state[p]) for p in params if p in self.state}
        groups = []
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = [index[id(p)] for p in g["params"]]
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ConfigError(
                f"{type(self).__name__}.load_state_dict: {len(groups)} param groups in the state, "
                f"optimizer has {len(self.param_groups)}"
            )
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ConfigError(
                    f"{type(self).__name__}.load_state_dict: a param group has {len(theirs['params'])} parameters "
                    f"in the state and {len(mine['params'])} in the optimizer"
                )
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = {}
        for key, st in state_dict["state"].items():
            p = params[int(key)]
            xp = p.device.xp
            self.state[p] = {
                k: (xp.array(v, dtype=p.array.dtype) if hasattr(v, "shape") and getattr(v, "ndim", 0) else _scalar(v))
                for k, v in st.items()
            }
        for mine, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = tuple(v) if isinstance(v, list) else v

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _scalar(v):
    if hasattr(v, "item"):
        v = v.item()
    return int(v) if float(v).is_integer() else v
