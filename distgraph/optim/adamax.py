"""Adamax (torch.optim.Adamax): Adam with the infinity norm of the gradients in place of their second moment."""

from distgraph.optim.adam import check_adam_options
from distgraph.optim.optimizer import Optimizer


class Adamax(Optimizer):
    """params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *, maximize=False,
    differentiable=False, capturable=False; the update is `functional.adamax_update`. foreach, differentiable
    and capturable choose torch's kernel: accepted and kept in the groups, the one update runs (`optimizer`'s
    module docstring; differentiable=True is refused)."""

    update_name = "adamax"
    hyperparameters = {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "maximize": False}
    implementation = {"foreach": None, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
            differentiable=differentiable, capturable=capturable,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("Adamax", g)
