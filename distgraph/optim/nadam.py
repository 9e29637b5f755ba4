"""NAdam and RAdam (torch.optim.NAdam / RAdam): Adam with Nesterov momentum, and rectified Adam; both with
torch's decoupled_weight_decay (NAdamW / RAdamW)."""

from distgraph.errors import ConfigError
from distgraph.optim.adam import check_adam_options
from distgraph.optim.optimizer import Optimizer


class NAdam(Optimizer):
    """params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, maximize=False; the update is `functional.nadam_update`."""

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

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, maximize=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("NAdam", g)
        if g["momentum_decay"] < 0:
            raise ConfigError(f"NAdam: invalid momentum_decay value {g['momentum_decay']} (must be >= 0)")


class RAdam(Optimizer):
    """params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
    maximize=False; the update is `functional.radam_update`."""

    update_name = "radam"
    hyperparameters = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": False,
        "maximize": False,
    }

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                 *, maximize=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("RAdam", g)
