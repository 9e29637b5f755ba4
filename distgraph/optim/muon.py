"""Muon (torch.optim.Muon): SGD momentum on 2-d parameters whose update is orthogonalized by a Newton-Schulz
iteration before the step (the hidden layers' matrices; biases and embeddings belong to another optimizer)."""

from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer


class Muon(Optimizer):
    """params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.775,
    2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None ("original": lr·√max(1, rows/cols); "match_rms_adamw":
    lr·0.2·√max(rows, cols)); the update is `functional_matrix.muon_update` (its Newton-Schulz iteration runs
    in bfloat16 as torch's). Every parameter must be 2-d. State: "momentum_buffer"."""

    update_name = "muon"
    hyperparameters = {
        "lr": 1e-3,
        "weight_decay": 0.1,
        "momentum": 0.95,
        "nesterov": True,
        "ns_coefficients": (3.4445, -4.7750, 2.0315),
        "eps": 1e-7,
        "ns_steps": 5,
        "adjust_lr_fn": None,
    }

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):  # fmt: skip
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
        )  # fmt: skip
        super().__init__(params, defaults)

    def check(self, g):
        # torch's wording
        if not 0.0 <= g["momentum"]:
            raise ConfigError(f"momentum should be >= 0 but is: {g['momentum']}")
        if not 0.0 <= g["weight_decay"]:
            raise ConfigError(f"weight decay should be >= 0 but is: {g['weight_decay']}")
        if g["adjust_lr_fn"] is not None and g["adjust_lr_fn"] not in ("original", "match_rms_adamw"):
            raise ConfigError(f"Adjust learning rate function {g['adjust_lr_fn']} is not supported")
        for p in g.get("params", ()):
            if p.ndim != 2:
                raise ConfigError(
                    f"Muon only supports 2D parameters whereas we found a parameter with size: {tuple(p.shape)}"
                )
