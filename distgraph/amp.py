"""Dynamic loss scaling for mixed-precision training (torch.amp.GradScaler's API and policy).

Low-precision gradients underflow to zero when they are small; scaling the loss by S scales every
gradient by S and lifts them back into range. `step` unscales the gradients and skips the update if
any is inf/NaN (the scale was too large), counting the skip; `update` halves the scale after an
overflow and doubles it after `growth_interval` clean steps.

As torch's, the scaler remembers per optimizer whether its gradients were already unscaled since the last
`update` (the clipping recipe: `unscale_(opt)`, clip, `step(opt)`): `step` then does not divide them again, and
calling `unscale_` twice or `step` twice before `update` is refused instead of silently shrinking the
gradients by the scale once more. `update` moves the scale from every optimizer's check since the last one.

`autocast` (the same object as `distgraph.autocast`, defined in ops/autocast.py where ops can read its state)
runs the listed ops in float16; `custom_fwd` / `custom_bwd` are torch.amp's decorators for a custom Function's
forward and backward under autocast.
"""

import functools
import math
import warnings

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.dtypes import float16
from distgraph.errors import ConfigError, DistgraphError
from distgraph.ops.autocast import autocast, get_autocast_dtype, is_autocast_enabled

__all__ = ["GradScaler", "GradScalerError", "autocast", "custom_fwd", "custom_bwd", "check_scaler_options"]

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"  # an optimizer's stage since the last update()


class GradScalerError(DistgraphError, RuntimeError):
    """A GradScaler method called out of order (torch raises RuntimeError or AssertionError there)."""


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
    """torch.amp.GradScaler. `device` ("cuda" by default, as torch's) is taken for torch's signature and kept as
    `scaler.device`; distgraph's scaler checks and unscales gradients on whatever device they are, so it stays
    enabled where that device is absent (torch's disables itself there, with a warning)."""

    def __init__(self, device="cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):  # fmt: skip
        if not isinstance(device, str) and type(device).__name__ != "Device":
            raise ConfigError(
                f"GradScaler: the first argument is the device ('cuda', 'cpu'), as torch.amp.GradScaler's, got "
                f"{device!r}; pass init_scale= by keyword (torch.cuda.amp.GradScaler's order is dg.cuda.amp's)"
            )
        self.device = str(device)
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
        self._good = 0  # torch's growth tracker: clean steps since the last overflow or growth
        self._per_optimizer = {}  # id(optimizer) -> {"stage": ..., "found_inf": bool or None}, until update()

    def is_enabled(self):
        return self.enabled

    def scale(self, outputs):
        """`outputs` (a tensor, or a list or tuple of them, nested) times the scale; unchanged when disabled."""
        if not self.enabled:
            return outputs
        if isinstance(outputs, list | tuple):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self.scale_value

    def _stage(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    def unscale_(self, optimizer):
        """Divide every gradient by the scale in place, and note whether any is inf/NaN: one check per device
        over all its gradients (a GPU's answer costs a wait for its queue, so it is asked once, not per parameter).
        Once per optimizer between updates, as torch (a second call would divide the gradients again)."""
        if not self.enabled:
            return
        state = self._stage(optimizer)
        if state["stage"] == _UNSCALED:
            raise GradScalerError(
                "GradScaler.unscale_() has already been called on this optimizer since the last update()"
            )
        if state["stage"] == _STEPPED:
            raise GradScalerError("GradScaler.unscale_() is being called after step() (call update() first)")
        grads = [p.grad.array for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        for g in grads:  # checked before any is divided, so a refusal leaves every gradient as it was
            if g.dtype.itemsize == 2 and g.dtype.kind == "f":
                raise ConfigError(
                    f"GradScaler.unscale_: attempting to unscale {g.dtype} gradients (shape {tuple(g.shape)}); as "
                    "in torch, keep the parameters in float32 (master weights) and only the forward in low precision"
                )
        inv = float(np.float32(1.0 / self.scale_value))  # torch: the float64 reciprocal, rounded to float32
        finite = {}  # device -> each gradient's all-finite flag, still on the device
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.array
                    g *= inv
                    finite.setdefault(p.device, []).append(p.device.xp.isfinite(g).all())
        state["found_inf"] = not all(bool(dev.xp.stack(flags).all()) for dev, flags in finite.items())
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless `unscale_` already did) and step, unless a gradient is inf/NaN: then skip (and count)
        the step and return None; else optimizer.step(*args, **kwargs)'s result."""
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise GradScalerError(
                "GradScaler.step: closure use is not supported while the scaler is enabled (as torch)"
            )
        state = self._stage(optimizer)
        if state["stage"] == _STEPPED:
            raise GradScalerError("GradScaler.step() has already been called on this optimizer since the last update()")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        state["stage"] = _STEPPED
        self._count(state["found_inf"])
        if state["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def _count(self, found_inf):
        self.steps += 1
        self.skipped_steps += int(found_inf)

    def record(self, found_inf):
        """`step` + `update` for a caller that unscaled and checked the gradients itself (the Trainer, whose
        workers each hold a slice): count the step, skipped when `found_inf`, and move the scale."""
        self._count(found_inf)
        self._move(bool(found_inf))

    def update(self, new_scale=None):
        """Move the scale after this iteration's steps: back off if any optimizer's gradients overflowed, else
        count a clean step and grow after `growth_interval` of them; `new_scale` sets it instead (as torch)."""
        if not self.enabled:
            return
        if new_scale is not None:
            self.scale_value = float(new_scale.item() if hasattr(new_scale, "item") else new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
            if not found:
                raise GradScalerError(
                    "GradScaler.update(): no inf checks were recorded since the last update (call step() or "
                    "unscale_() first)"
                )
            self._move(any(found))
        self._per_optimizer = {}

    def _move(self, found_inf):
        """torch's _amp_update_scale_: back off on an overflow; grow after growth_interval clean steps, unless
        the grown scale would be inf (then it stays), and restart the count either way."""
        if found_inf:
            self.scale_value *= self.backoff_factor
            self._good = 0
            return
        self._good += 1
        if self._good == self.growth_interval:
            grown = self.scale_value * self.growth_factor
            if math.isfinite(grown):
                self.scale_value = grown
            self._good = 0

    def get_growth_factor(self):
        return self.growth_factor

    def set_growth_factor(self, new_factor):
        self.growth_factor = new_factor

    def get_backoff_factor(self):
        return self.backoff_factor

    def set_backoff_factor(self, new_factor):
        self.backoff_factor = new_factor

    def get_growth_interval(self):
        return self.growth_interval

    def set_growth_interval(self, new_interval):
        self.growth_interval = new_interval

    def config(self):
        """The constructor's arguments: what a replica of this scaler on a worker is built from."""
        return {
            "device": self.device, "init_scale": self.scale_value, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval, "enabled": self.enabled,
        }  # fmt: skip

    def get_scale(self):
        """The scale the loss is multiplied by: 1.0 for a disabled scaler (as torch), whose scale() is a no-op."""
        return self.scale_value if self.enabled else 1.0

    def state_dict(self):
        """torch's keys (scale, growth_factor, backoff_factor, growth_interval, _growth_tracker) and distgraph's
        step counters (skipped_steps, steps); {} for a disabled scaler, as torch's."""
        if not self.enabled:
            return {}
        return {
            "scale": self.scale_value, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval, "_growth_tracker": self._good,
            "skipped_steps": self.skipped_steps, "steps": self.steps,
        }  # fmt: skip

    def load_state_dict(self, sd):
        """Restore a state_dict of this class or of torch's GradScaler (whose options it restores as well;
        counters it lacks start at 0); an older distgraph one keeps its growth tracker under "good"."""
        if not sd:
            raise GradScalerError(
                "GradScaler.load_state_dict: the state dict is empty, possibly saved from a disabled GradScaler"
            )
        self.scale_value = float(sd["scale"])
        self._good = int(sd.get("_growth_tracker", sd.get("good", 0)))
        for key in ("growth_factor", "backoff_factor", "growth_interval"):
            if key in sd:
                setattr(self, key, sd[key])
        self.skipped_steps, self.steps = int(sd.get("skipped_steps", 0)), int(sd.get("steps", 0))


def _cast_floats(value, device_type, dtype):
    if isinstance(value, Tensor):
        floating = value.is_floating_point() and value.device.type == device_type
        return value.to(dtype) if floating else value
    if isinstance(value, list | tuple):
        return type(value)(_cast_floats(v, device_type, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, device_type, dtype) for k, v in value.items()}
    return value


def custom_fwd(fwd=None, *, device_type, cast_inputs=None):
    """torch.amp.custom_fwd: decorate a custom Function's `forward(ctx, ...)`. With `cast_inputs` and autocast
    on for `device_type`, its floating tensor arguments are cast to `cast_inputs` and it runs with autocast
    off; without, it runs under the caller's autocast state, which `custom_bwd` gives its backward."""
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(ctx, *args, **kwargs):
        ctx._dtype = get_autocast_dtype(device_type)
        on = is_autocast_enabled(device_type)
        ctx._fwd_used_autocast = on and cast_inputs is None
        if cast_inputs is None or not on:
            return fwd(ctx, *args, **kwargs)
        with autocast(device_type, enabled=False):
            args, kwargs = _cast_floats(args, device_type, cast_inputs), _cast_floats(kwargs, device_type, cast_inputs)
            return fwd(ctx, *args, **kwargs)

    return decorate_fwd


def custom_bwd(bwd=None, *, device_type):
    """torch.amp.custom_bwd: the decorated `backward(ctx, ...)` runs under the autocast state its forward had."""
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(ctx, *args, **kwargs):
        with autocast(device_type, dtype=ctx._dtype, enabled=ctx._fwd_used_autocast):
            return bwd(ctx, *args, **kwargs)

    return decorate_bwd


def deprecated_spellings(device_type):
    """torch.<device_type>.amp's deprecated `GradScaler(init_scale, ...)` and `autocast(enabled, dtype,
    cache_enabled)` (cuda_amp.py, cpu.py): each warns with torch's FutureWarning naming its replacement."""
    module = f"distgraph.{device_type}.amp"

    class DeprecatedGradScaler(GradScaler):
        def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                     enabled=True):  # fmt: skip
            warnings.warn(
                f"`torch.{device_type}.amp.GradScaler(args...)` is deprecated. Please use "
                f"`torch.amp.GradScaler('{device_type}', args...)` instead.",
                FutureWarning,
                stacklevel=2,
            )
            super().__init__(device_type, init_scale, growth_factor, backoff_factor, growth_interval, enabled)

    def deprecated_autocast(enabled=True, dtype=float16, cache_enabled=True):
        warnings.warn(
            f"`torch.{device_type}.amp.autocast(args...)` is deprecated. Please use "
            f"`torch.amp.autocast('{device_type}', args...)` instead.",
            FutureWarning,
            stacklevel=2,
        )
        return autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    for obj, name in ((DeprecatedGradScaler, "GradScaler"), (deprecated_autocast, "autocast")):
        obj.__name__ = obj.__qualname__ = name
        obj.__module__ = module
    return DeprecatedGradScaler, deprecated_autocast
