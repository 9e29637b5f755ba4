"""Cyclic learning-rate schedules with torch's formulas: CosineAnnealingWarmRestarts (SGDR), CyclicLR and
OneCycleLR (the 1cycle policy).

Each computes the lr from its own position in the cycle (not recursively from the current lr), as
torch does, so `step(epoch)` and fractional epochs (SGDR's `step(epoch + i / iters)`) need no closed
form of their own. Re-exported by `lr_scheduler`, whose base class they extend.
"""

import math

from distgraph.errors import ConfigError
from distgraph.optim.lr_scheduler import (
    LRScheduler,
    _check_optimizer,
    _is_function,
    _per_group,
    _warn_get_lr_called_within_step,
)


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine from base_lr to eta_min over T_i epochs, then restart; T_i starts at T_0 and grows by T_mult
    at each restart. `step(epoch)` takes a fractional epoch to anneal within an epoch."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
            raise ConfigError(f"CosineAnnealingWarmRestarts: T_0 must be a positive integer, got {T_0!r}")
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ConfigError(f"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1, got {T_mult!r}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, float | int):
            raise ConfigError(f"CosineAnnealingWarmRestarts: eta_min must be a number, got {eta_min!r}")
        self.T_0 = self.T_i = T_0
        self.T_mult, self.eta_min, self.T_cur = T_mult, eta_min, last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        m = self.eta_min
        return [m + (b - m) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2 for b in self.base_lrs]

    def step(self, epoch=None):
        """Advance one epoch, or go to `epoch` (a float: a point within an epoch), placing it in its cycle."""
        self._step_count += 1
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur, self.T_i = self.T_cur % self.T_i, self.T_i * self.T_mult
        elif epoch < 0:
            raise ConfigError(f"CosineAnnealingWarmRestarts: expected a non-negative epoch, got {epoch}")
        elif epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:  # the restart before `epoch`: T_0 · (T_mult^n − 1) / (T_mult − 1) epochs in
                n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult**n
        else:
            self.T_i, self.T_cur = self.T_0, epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            lrs = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for g, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr
        self._last_lr = self._lrs()


class CyclicLR(LRScheduler):
    """The lr cycles between base_lr and max_lr (step_size_up iterations up, step_size_down down), the
    amplitude scaled per cycle ("triangular": constant, "triangular2": halved each cycle) or per iteration
    ("exp_range": gamma**iteration), or by `scale_fn`; momentum (or Adam's beta1) cycles inversely between
    max_momentum and base_momentum when `cycle_momentum`. Call step() after every batch."""

    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1.0, scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1):  # fmt: skip
        if mode not in self.MODES and scale_fn is None:
            raise ConfigError(f"CyclicLR: mode must be one of {', '.join(self.MODES)} (or give scale_fn), got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ConfigError(f"CyclicLR: scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        if up <= 0 or down < 0:
            raise ConfigError(f"CyclicLR: step sizes must be positive, got up={step_size_up}, down={step_size_down}")
        self.optimizer = optimizer
        base_lrs = _per_group("CyclicLR: base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, g in zip(base_lrs, optimizer.param_groups):
                g["lr"] = lr
        self.max_lrs = _per_group("CyclicLR: max_lr", optimizer, max_lr)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode, self.gamma, self._scale_fn_custom = mode, gamma, scale_fn
        # the built-in modes fix their scale mode, as torch's
        self.scale_mode = scale_mode if scale_fn is not None else ("iterations" if mode == "exp_range" else "cycle")
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ConfigError(
                    f"CyclicLR: {type(optimizer).__name__} has no momentum or betas to cycle; pass cycle_momentum=False"
                )
            self.use_beta1 = "betas" in optimizer.defaults
            self.base_momentums = _per_group("CyclicLR: base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group("CyclicLR: max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for top, bottom, g in zip(self.max_momentums, self.base_momentums, optimizer.param_groups):
                    self._set_momentum(g, top)
                    g["max_momentum"], g["base_momentum"] = top, bottom
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def scale_fn(self, x):
        """The amplitude's scale at cycle (or iteration) x."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        scale_factor = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [b + (m - b) * scale_factor * scale for b, m in zip(self.base_lrs, self.max_lrs, strict=True)]
        if self.cycle_momentum:
            for g, bottom, top in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                self._set_momentum(g, top - (top - bottom) * scale_factor * scale)
        return lrs

    def state_dict(self):
        """A custom scale_fn is not state: only a callable object's attributes are saved (torch's rule)."""
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_scale_fn_custom")}
        fn = self._scale_fn_custom
        sd["_scale_fn_custom"] = None if fn is None or _is_function(fn) else dict(fn.__dict__)
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("_scale_fn_custom", None)
        self.__dict__.update(state_dict)
        if saved is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(saved)


_PHASE_KEYS = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")  # one phase of OneCycleLR


class OneCycleLR(LRScheduler):
    """The 1cycle policy: lr warms up to max_lr then anneals far below the start (momentum cycles inversely).

    Call step() after every batch: total_steps (or epochs · steps_per_epoch) steps in all.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):  # fmt: skip
        _check_optimizer(type(self).__name__, optimizer)
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ConfigError(f"OneCycleLR: expected a positive integer total_steps, got {total_steps!r}")
        elif epochs is not None and steps_per_epoch is not None:
            for key, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
                if not isinstance(v, int) or v <= 0:
                    raise ConfigError(f"OneCycleLR: expected a positive integer {key}, got {v!r}")
            total_steps = epochs * steps_per_epoch
        else:
            raise ConfigError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ConfigError(f"OneCycleLR: pct_start must be a float in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ConfigError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps, self._anneal_func_type = total_steps, anneal_strategy
        n = total_steps
        warmup = (float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum")
        if three_phase:
            phases = [
                warmup,
                (float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            phases = [warmup, (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self._schedule_phases = [dict(zip(_PHASE_KEYS, p)) for p in phases]  # torch's state_dict entries
        if last_epoch == -1:
            for g, m in zip(optimizer.param_groups, _per_group("OneCycleLR: max_lr", optimizer, max_lr)):
                g["initial_lr"] = m / div_factor
                g["max_lr"] = m
                g["min_lr"] = g["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ConfigError(
                    f"OneCycleLR: {type(optimizer).__name__} has no momentum or betas to cycle; "
                    "pass cycle_momentum=False"
                )
            self.use_beta1 = "betas" in optimizer.defaults
            maxes = _per_group("OneCycleLR: max_momentum", optimizer, max_momentum)
            bases = _per_group("OneCycleLR: base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for top, bottom, g in zip(maxes, bases, optimizer.param_groups):
                    self._set_momentum(g, top)
                    g["max_momentum"], g["base_momentum"] = top, bottom
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        step = self.last_epoch
        if step > self.total_steps:
            raise ConfigError(f"OneCycleLR: tried to step {step} times; total_steps is {self.total_steps}")
        lrs = []
        for g in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end, lr0, lr1, m0, m1 = (phase[k] for k in _PHASE_KEYS)
                if step <= end or i == len(self._schedule_phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(g[lr0], g[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(g, self._anneal(g[m0], g[m1], pct))
                    break
                start = end
        return lrs

    def load_state_dict(self, state_dict):
        """A state dict saved before distgraph took torch's keys (`_phases` as tuples, `anneal_strategy`) loads too."""
        state_dict = dict(state_dict)
        if "_phases" in state_dict:
            state_dict["_schedule_phases"] = [dict(zip(_PHASE_KEYS, p)) for p in state_dict.pop("_phases")]
        if "anneal_strategy" in state_dict:
            state_dict["_anneal_func_type"] = state_dict.pop("anneal_strategy")
        super().load_state_dict(state_dict)
