"""Schedules that scale the lr by a factor with torch's formulas: ConstantLR, MultiplicativeLR, PolynomialLR.

Each is chainable as torch's: `step()` scales the current lr (so another scheduler on the same
optimizer composes with it), `step(epoch)` uses the closed form from base_lrs where torch has one.
Re-exported by `lr_scheduler`, whose base class they extend.
"""

from distgraph.errors import ConfigError
from distgraph.optim.lr_scheduler import LambdaLR, LRScheduler, _warn_get_lr_called_within_step


class ConstantLR(LRScheduler):
    """lr · factor for the first total_iters epochs, then lr again."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if not 0 <= factor <= 1:
            raise ConfigError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._lrs()]
        if self.last_epoch != self.total_iters:
            return self._lrs()
        return [lr * (1.0 / self.factor) for lr in self._lrs()]

    def _get_closed_form_lr(self):
        f = self.factor
        return [b * (f + (self.last_epoch >= self.total_iters) * (1 - f)) for b in self.base_lrs]


class MultiplicativeLR(LambdaLR):
    """Multiply the lr by lr_lambda(epoch) every epoch (one function for all groups or one per group);
    its state dict keeps callable objects' attributes as LambdaLR's."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        for fn in lr_lambda if isinstance(lr_lambda, list | tuple) else [lr_lambda]:
            if not callable(fn):
                raise ConfigError(f"MultiplicativeLR: lr_lambda must be callable, got {type(fn).__name__}")
        super().__init__(optimizer, lr_lambda, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return self._lrs()
        return [lr * fn(self.last_epoch) for fn, lr in zip(self.lr_lambdas, self._lrs(), strict=True)]


class PolynomialLR(LRScheduler):
    """Decay the lr to 0 over total_iters epochs as (1 − epoch / total_iters) ** power, then hold."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        if total_iters <= 0:
            raise ConfigError(f"PolynomialLR: total_iters must be > 0, got {total_iters}")
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        e, n = self.last_epoch, self.total_iters
        if self._is_initial or e > n:
            return self._lrs()
        factor = ((1.0 - e / n) / (1.0 - (e - 1) / n)) ** self.power
        return [lr * factor for lr in self._lrs()]

    def _get_closed_form_lr(self):
        n = self.total_iters
        return [b * (1.0 - min(n, self.last_epoch) / n) ** self.power for b in self.base_lrs]
