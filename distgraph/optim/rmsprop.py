"""RMSprop (torch.optim.RMSprop): plain, centered, with momentum."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer


class RMSprop(Optimizer):
    """params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False;
    the update is `functional.rmsprop_update`."""

    update_name = "rmsprop"
    hyperparameters = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
        "maximize": False,
    }

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False):  # fmt: skip
        defaults = dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
            maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        for key in ("alpha", "eps", "weight_decay", "momentum"):
            if g[key] < 0:
                raise ConfigError(f"RMSprop: invalid {key} value {g[key]} (must be >= 0)")
