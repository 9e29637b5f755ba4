"""Dynamic loss scaling for mixed-precision training (torch.amp.GradScaler's API and policy).

Low-precision gradients underflow to zero when they are small; scaling the loss by S scales every
gradient by S and lifts them back into range. `step` unscales the gradients and skips the update if
any is inf/NaN (the scale was too large), counting the skip; `update` halves the scale after an
overflow and doubles it after `growth_interval` clean steps.
"""

import math

from distgraph.autograd.grad_mode import no_grad
from distgraph.errors import ConfigError


def _number(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_scaler_options(opts, where="GradScaler", prefix=""):
    """Raise a ConfigError naming `where` and `prefix + option` for the first unusable GradScaler argument in
    `opts` (absent ones take the defaults); by the constructor and by a YAML config's `loss_scaling:`.

    torch asserts growth_factor > 1 and backoff_factor < 1 (else the scale never grows, or never shrinks
    after an overflow). It lets the rest through, but they cannot work: a zero or NaN init_scale and a
    backoff_factor ≤ 0 (a zero scale after the first overflow) divide the gradients by zero or skip every
    step, and a growth_interval < 1 is a modulo by zero or a growth schedule torch does not have."""

    def fail(name, text, value):
        raise ConfigError(f"{where}: {prefix}{name} must be {text}, got {value!r}")

    init_scale = opts.get("init_scale", 2.0**16)
    if not _number(init_scale) or math.isnan(init_scale) or init_scale == 0:
        fail("init_scale", "a nonzero number (the gradients are divided by it)", init_scale)
    growth = opts.get("growth_factor", 2.0)
    if not _number(growth) or not growth > 1.0:
        fail("growth_factor", "a number > 1.0 (as in torch)", growth)
    backoff = opts.get("backoff_factor", 0.5)
    if not _number(backoff) or not 0.0 < backoff < 1.0:
        fail("backoff_factor", "a number in (0, 1) (torch: < 1.0; 0 zeroes the scale)", backoff)
    interval = opts.get("growth_interval", 2000)
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        fail("growth_interval", "an int ≥ 1 (clean steps before the scale grows)", interval)


class GradScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
        if enabled:  # as torch, a disabled scaler's arguments are never used, so not checked
            check_scaler_options(
                {"init_scale": init_scale, "growth_factor": growth_factor, "backoff_factor": backoff_factor,
                 "growth_interval": growth_interval}
            )  # fmt: skip
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.enabled = enabled
        self.skipped_steps = 0
        self.steps = 0
        self._good = 0
        self._found_inf = False

    def scale(self, loss):
        return loss * self.scale_value if self.enabled else loss

    def unscale_(self, optimizer):
        """Divide every gradient by the scale in place, and note whether any is inf/NaN: one check per device
        over all its gradients (a GPU's answer costs a wait for its queue, so it is asked once, not per parameter)."""
        inv = 1.0 / self.scale_value
        finite = {}  # device -> each gradient's all-finite flag, still on the device
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.array
                    g *= inv
                    finite.setdefault(p.device, []).append(p.device.xp.isfinite(g).all())
        self._found_inf = not all(bool(dev.xp.stack(flags).all()) for dev, flags in finite.items())

    def step(self, optimizer):
        """Unscale and step, unless a gradient is inf/NaN: then skip (and count) the step."""
        if not self.enabled:
            return optimizer.step()
        self.unscale_(optimizer)
        self._count(self._found_inf)
        if self._found_inf:
            return None
        return optimizer.step()

    def _count(self, found_inf):
        self.steps += 1
        self.skipped_steps += int(found_inf)

    def record(self, found_inf):
        """`step` + `update` for a caller that unscaled and checked the gradients itself (the Trainer, whose
        workers each hold a slice): count the step, skipped when `found_inf`, and move the scale."""
        self._count(found_inf)
        self._found_inf = bool(found_inf)
        self.update()

    def update(self):
        if not self.enabled:
            return
        if self._found_inf:
            self.scale_value *= self.backoff_factor
            self._good = 0
        else:
            self._good += 1
            if self._good % self.growth_interval == 0:
                self.scale_value = min(self.scale_value * self.growth_factor, math.inf)
        self._found_inf = False

    def config(self):
        """The constructor's arguments: what a replica of this scaler on a worker is built from."""
        return {
            "init_scale": self.scale_value, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval, "enabled": self.enabled,
        }  # fmt: skip

    def get_scale(self):
        return self.scale_value

    def state_dict(self):
        return {"scale": self.scale_value, "good": self._good, "skipped_steps": self.skipped_steps, "steps": self.steps}

    def load_state_dict(self, sd):
        self.scale_value, self._good = float(sd["scale"]), int(sd["good"])
        self.skipped_steps, self.steps = int(sd["skipped_steps"]), int(sd["steps"])
