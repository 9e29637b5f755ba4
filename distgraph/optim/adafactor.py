"""Adafactor (torch.optim.Adafactor): Adam-like steps whose second moments of a matrix are kept as a row and
a column vector (sublinear memory), with a relative step size and update clipping."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer
from distgraph.optim.optimizer_state import to_param


class Adafactor(Optimizer):
    """params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *, foreach=None,
    maximize=False; the update is `functional_matrix.adafactor_update`. foreach chooses torch's kernel: accepted
    and kept in the groups, the one update runs. State: "step", and "row_var"/"col_var" (the gradient's shape
    with its last, resp. second-to-last, dim 1) for a parameter of 2 or more dims, else "variance"."""

    update_name = "adafactor"
    hyperparameters = {
        "lr": 1e-2,
        "beta2_decay": -0.8,
        "eps": (None, 1e-3),
        "d": 1.0,
        "weight_decay": 0.0,
        "maximize": False,
    }
    implementation = {"foreach": None}

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False):  # fmt: skip
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay, foreach=foreach,
            maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        # torch's wording
        if not 0.0 >= g["beta2_decay"]:
            raise ConfigError(f"beta2_decay should be <= 0 but is: {g['beta2_decay']}")
        eps1, eps2 = g["eps"]
        if eps1 is not None and not 0.0 <= eps1:
            raise ConfigError(f"epsilon1 should be >= 0 but is: {eps1}")
        if not 0.0 <= eps2:
            raise ConfigError(f"epsilon2 should be >= 0 but is: {eps2}")
        if not 1.0 <= g["d"]:
            raise ConfigError(f"Clipping threshold d should be >= 1 but is: {g['d']}")
        if not 0.0 <= g["weight_decay"]:
            raise ConfigError(f"weight_decay should be >= 0 but is: {g['weight_decay']}")

    def _load_param_state(self, param, entries):
        shape = tuple(param.shape)
        shapes = {"row_var": (*shape[:-1], 1), "col_var": (*shape[:-2], 1, *shape[-1:])}
        name = type(self).__name__
        return {k: to_param(v, param, k, name, shape=shapes.get(k)) for k, v in entries.items()}
