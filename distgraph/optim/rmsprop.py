"""RMSprop (torch.optim.RMSprop): plain, centered, with momentum."""

from distgraph.optim.optimizer import Optimizer, check_nonnegative


class RMSprop(Optimizer):
    """params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, capturable=False,
    foreach=None, maximize=False, differentiable=False; the update is `functional.rmsprop_update`. capturable,
    foreach and differentiable choose torch's kernel: accepted and kept in the groups, the one update runs
    (`optimizer`'s module docstring; differentiable=True is refused)."""

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
    implementation = {"capturable": False, "foreach": None, "differentiable": False}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):  # fmt: skip
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay,
            capturable=capturable, foreach=foreach, maximize=maximize, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_nonnegative("RMSprop", g, ("alpha", "eps", "weight_decay", "momentum"))
