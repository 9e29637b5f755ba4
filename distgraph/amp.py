"""Dynamic loss scaling for mixed-precision training (torch.amp.GradScaler's API and policy).

Low-precision gradients underflow to zero when they are small; scaling the loss by S scales every
gradient by S and lifts them back into range. `step` unscales the gradients and skips the update if
any is inf/NaN (the scale was too large), counting the skip; `update` halves the scale after an
overflow and doubles it after `growth_interval` clean steps.
"""

import math

from distgraph.autograd.grad_mode import no_grad


class GradScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
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
        inv = 1.0 / self.scale_value
        found = False
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.array
                    g *= inv
                    if not found and not bool(p.device.xp.isfinite(g).all()):
                        found = True
        self._found_inf = found

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
