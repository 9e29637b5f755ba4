"""Adadelta (torch.optim.Adadelta): steps scaled by the ratio of running RMS of updates and of gradients."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class Adadelta(Optimizer):
    """params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False, maximize=False,
    differentiable=False; the update is `functional.adadelta_update`. foreach, capturable and differentiable
    choose torch's kernel: accepted and kept in the groups, the one update runs (`optimizer`'s module
    docstring; differentiable=True is refused)."""

    update_name = "adadelta"
    hyperparameters = {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False}
    implementation = {"capturable": False, "foreach": None, "differentiable": False}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):  # fmt: skip
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, capturable=capturable,
            foreach=foreach, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        if not 0 <= g["rho"] <= 1:
            raise ConfigError(f"Adadelta: invalid rho value {g['rho']} (must be in [0, 1])")
        check_nonnegative("Adadelta", g, ("eps", "weight_decay"))
