"""Rprop (torch.optim.Rprop) and ASGD (torch.optim.ASGD): the two SGD variants whose step is not lr · gradient
— Rprop adapts a step size per weight from the gradient's sign, ASGD decays its step and averages the iterates."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class Rprop(Optimizer):
    """params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
    maximize=False, differentiable=False; the update is `functional.rprop_update` (lr is the initial step size
    of every weight). capturable, foreach and differentiable choose torch's kernel: accepted and kept in the
    groups, the one update runs (`optimizer`'s module docstring; differentiable=True is refused)."""

    update_name = "rprop"
    hyperparameters = {"lr": 1e-2, "etas": (0.5, 1.2), "step_sizes": (1e-6, 50), "maximize": False}
    implementation = {"foreach": None, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
                 maximize=False, differentiable=False):  # fmt: skip
        defaults = dict(
            lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), foreach=foreach, maximize=maximize,
            differentiable=differentiable, capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        etas, sizes = g["etas"], g["step_sizes"]
        if len(etas) != 2 or not 0 < etas[0] < 1 < etas[1]:
            raise ConfigError(f"Rprop: invalid etas {tuple(etas)} (need 0 < etaminus < 1 < etaplus)")
        if len(sizes) != 2 or not 0 <= sizes[0] <= sizes[1]:
            raise ConfigError(f"Rprop: invalid step_sizes {tuple(sizes)} (need 0 <= min <= max)")


class ASGD(Optimizer):
    """params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None, maximize=False,
    differentiable=False, capturable=False; the update is `functional.asgd_update` (the averaged parameters are
    the state "ax"). foreach, differentiable and capturable choose torch's kernel: accepted and kept in the
    groups, the one update runs (`optimizer`'s module docstring; differentiable=True is refused)."""

    update_name = "asgd"
    scalar_state = ("eta", "mu")
    hyperparameters = {"lr": 1e-2, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0, "maximize": False}
    implementation = {"foreach": None, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, foreach=None, maximize=False,
                 differentiable=False, capturable=False):  # fmt: skip
        defaults = dict(
            lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
            differentiable=differentiable, capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_nonnegative("ASGD", g, ("weight_decay",))
