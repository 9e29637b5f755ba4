"""SGD with momentum, dampening, Nesterov momentum, weight decay and maximize (torch.optim.SGD)."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class SGD(Optimizer):
    """params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False,
    foreach=None, differentiable=False, fused=None; the update is `functional.sgd_update`. foreach, fused and
    differentiable choose torch's kernel: accepted and kept in the groups, the one update runs (`optimizer`'s
    module docstring; differentiable=True is refused)."""

    update_name = "sgd"
    hyperparameters = {
        "lr": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "maximize": False,
    }
    implementation = {"foreach": None, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):  # fmt: skip
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_nonnegative("SGD", g, ("momentum", "weight_decay"))
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ConfigError(
                f"SGD: nesterov momentum requires a momentum > 0 and zero dampening "
                f"(got momentum={g['momentum']}, dampening={g['dampening']})"
            )
