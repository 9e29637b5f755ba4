"""Adagrad (torch.optim.Adagrad), with lr_decay and an initial accumulator value."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer


class Adagrad(Optimizer):
    """params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, maximize=False;
    the update is `functional.adagrad_update`."""

    update_name = "adagrad"
    hyperparameters = {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
        "maximize": False,
    }

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, *,
                 maximize=False):  # fmt: skip
        defaults = dict(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value,
            eps=eps, maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        for key in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            if g[key] < 0:
                raise ConfigError(f"Adagrad: invalid {key} value {g[key]} (must be >= 0)")
