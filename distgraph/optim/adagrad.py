"""Adagrad (torch.optim.Adagrad), with lr_decay and an initial accumulator value."""

from distgraph.backend import on
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class Adagrad(Optimizer):
    """params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, foreach=None, *,
    maximize=False, differentiable=False, fused=None; the update is `functional.adagrad_update`. foreach,
    differentiable and fused choose torch's kernel: accepted and kept in the groups, the one update runs
    (`optimizer`'s module docstring; differentiable=True is refused)."""

    update_name = "adagrad"
    hyperparameters = {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
        "maximize": False,
    }
    implementation = {"foreach": None, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):  # fmt: skip
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
            differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults)
        for p in self._params():  # torch makes the state here, from the constructor's value (not a group's)
            self._init_state(p)

    def _init_state(self, p):
        with on(p.device):  # (cupy allocates on its current GPU: the parameter's)
            total = p.device.xp.full_like(p.array, self.defaults["initial_accumulator_value"])
        self.state[p] = {"step": 0, "sum": total}

    def update_options(self, group):
        """As torch, a parameter first stepped later (one of an added group) also starts its sum at the
        constructor's initial_accumulator_value, whatever its group says."""
        return {
            **super().update_options(group),
            "initial_accumulator_value": self.defaults["initial_accumulator_value"],
        }

    def check(self, g):
        check_nonnegative("Adagrad", g, ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"))
