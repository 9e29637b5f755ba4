"""Adamax (torch.optim.Adamax): Adam with the infinity norm of the gradients in place of their second moment."""

from distgraph.optim.adam import check_adam_options
from distgraph.optim.optimizer import Optimizer


class Adamax(Optimizer):
    """params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False; the update is
    `functional.adamax_update`."""

    update_name = "adamax"
    hyperparameters = {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "maximize": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options("Adamax", g)
