"""NAdam and RAdam (torch.optim.NAdam / RAdam): Adam with Nesterov momentum, and rectified Adam; both with
torch's decoupled_weight_decay (NAdamW / RAdamW)."""

from distgraph.optim.adam import check_adam_options
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class NAdam(Optimizer):
    """params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False, differentiable=False; the
    update is `functional.nadam_update`. foreach, capturable and differentiable choose torch's kernel: accepted
    and kept in the groups, the one update runs (`optimizer`'s module docstring; differentiable=True is
    refused)."""

    update_name = "nadam"
    scalar_state = ("mu_product",)
    hyperparameters = {
        "lr": 2e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum_decay": 4e-3,
        "decoupled_weight_decay": False,
        "maximize": False,
    }
    implementation = {"foreach": None, "capturable": False, "differentiable": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
            capturable=capturable, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("NAdam", g)
        check_nonnegative("NAdam", g, ("momentum_decay",))


class RAdam(Optimizer):
    """params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False, *,
    foreach=None, maximize=False, capturable=False, differentiable=False; the update is
    `functional.radam_update`. foreach, capturable and differentiable choose torch's kernel: accepted and kept
    in the groups, the one update runs (`optimizer`'s module docstring; differentiable=True is refused)."""

    update_name = "radam"
    hyperparameters = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": False,
        "maximize": False,
    }
    implementation = {"foreach": None, "capturable": False, "differentiable": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
            capturable=capturable, decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("RAdam", g)
