"""Adam and AdamW (torch.optim.Adam / AdamW), with amsgrad; AdamW is Adam with decoupled weight decay."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer, check_nonnegative


class Adam(Optimizer):
    """params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *, foreach=None,
    maximize=False, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False; the update
    is `functional.adam_update`. foreach, capturable, differentiable and fused choose torch's kernel: accepted
    and kept in the groups, the one update runs (`optimizer`'s module docstring; differentiable=True is
    refused)."""

    update_name = "adam"
    hyperparameters = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        "maximize": False,
        "decoupled_weight_decay": False,
    }
    implementation = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        check_adam_options(type(self).__name__, g)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2): the parameter shrinks by lr·weight_decay each step.
    As torch's, its groups hold decoupled_weight_decay=True (a group may set it False) and it runs Adam's update;
    it takes Adam's implementation options."""

    hyperparameters = {**Adam.hyperparameters, "weight_decay": 1e-2, "decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):  # fmt: skip
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
        )  # fmt: skip
        Optimizer.__init__(self, params, defaults)


def check_adam_options(name, g):
    """The Adam family's checks (Adam, AdamW, NAdam, RAdam, Adamax): betas in [0, 1), eps and weight_decay >= 0."""
    betas = g["betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{name}: invalid betas {betas} (two values, each in [0, 1))")
    check_nonnegative(name, g, ("eps", "weight_decay"))
