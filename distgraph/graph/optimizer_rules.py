"""Each optimizer's update rule written with distgraph ops, for the captured training step (`optimizer_capture`).

A rule mirrors its `optim.functional` twin operation for operation, in the same order and on scalars of
the parameter's dtype, so the compiled step gives the eager step's bits. A rule says:

- `structure(group)`: what shapes its graph (an option on or off, a branch torch takes); fixed at capture.
  `settings` names those options for the error raised when one changes.
- `group_scalars(group)` / `step_scalars(group, state)`: the numbers the graph reads as inputs, refreshed
  on the host before every call — the group's (learning rate, betas) and a parameter's own for the coming
  step (bias corrections, NAdam's momentum coefficients, ASGD's eta). A branch the eager rule takes or not
  from step to step (RAdam's rectification, ASGD's averaging) is a `where` on such a scalar, whose chosen
  side is computed exactly as eagerly, so the graph stays one graph.
- `state_keys(group)`, `init_state(group, state, param)`: its state arrays (graph inputs and outputs),
  made as the eager rule makes them on its first step; `after(group, state)` advances what the host
  keeps (the step count, NAdam's mu_product, ASGD's eta and mu) once a call has run.
"""

import math

from distgraph.ops import compare as cmp
from distgraph.ops import elementwise as ew
from distgraph.optim import functional


class _Rule:
    """Defaults: a step count and zero arrays under `state_keys`, made on the first step (`functional._stepped`)."""

    def step_scalars(self, g, state):
        return {}

    def init_state(self, g, state, like):
        if "step" not in state:
            state["step"] = 0
            for key in self.state_keys(g):
                state[key] = like.device.xp.zeros_like(like.array)

    def after(self, g, state):
        state["step"] += 1


class _SGD(_Rule):
    """`functional.sgd_update`: weight decay, maximize, momentum with dampening, nesterov."""

    settings = "momentum, nesterov, maximize, weight decay on or off"

    def structure(self, g):
        return bool(g["momentum"]), g["nesterov"], g["maximize"], bool(g["weight_decay"])

    def state_keys(self, g):
        return ("momentum_buffer",) if g["momentum"] else ()

    def group_scalars(self, g):
        out = {"lr": g["lr"]} | ({"weight_decay": g["weight_decay"]} if g["weight_decay"] else {})
        return out | ({"momentum": g["momentum"]} if g["momentum"] else {})

    def step_scalars(self, g, state):
        if not g["momentum"]:
            return {}
        first = "momentum_buffer" not in state  # the first step copies the gradient: buffer·0 + d·1 on zeros
        return {"keep": 0.0 if first else g["momentum"], "scale": 1.0 if first else 1 - g["dampening"]}

    def init_state(self, g, state, like):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = like.device.xp.zeros_like(like.array)

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        if not g["momentum"]:
            return p - d * c["lr"], ()
        buf = s[0] * c["keep"] + d * c["scale"]
        d = d + buf * c["momentum"] if g["nesterov"] else buf
        return p - d * c["lr"], (buf,)

    def after(self, g, state):
        pass


class _Adam(_Rule):
    """`functional.adam_update` (AdamW: decoupled_weight_decay=True): bias-corrected moments, optional amsgrad."""

    settings = "amsgrad, maximize, weight decay on or off, decoupled weight decay, beta1 > 0.5 (torch's lerp branch)"

    def _decoupled(self, g):
        return g.get("decoupled_weight_decay", False)

    def structure(self, g):
        return g["amsgrad"], g["maximize"], bool(g["weight_decay"]), self._decoupled(g), _small(1 - g["betas"][0])

    def state_keys(self, g):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ())

    def group_scalars(self, g):
        return _moment_scalars(g) | {"eps": g["eps"]} | _decay_scalars(g, self._decoupled(g))

    def step_scalars(self, g, state):
        (beta1, beta2), step = g["betas"], state.get("step", 0) + 1  # the bias corrections of the coming step
        return {"step_size": g["lr"] / (1 - beta1**step), "bias_correction2_sqrt": math.sqrt(1 - beta2**step)}

    def init_state(self, g, state, like):
        zeros = like.device.xp.zeros_like
        if "step" not in state:
            state |= {"step": 0, "exp_avg": zeros(like.array), "exp_avg_sq": zeros(like.array)}
        if g["amsgrad"] and "max_exp_avg_sq" not in state:  # max(0, v) = v: eager's copy of the new v
            state["max_exp_avg_sq"] = zeros(like.array)

    def trace(self, g, p, grad, c, s):
        p, d = _decayed(g, p, grad, c, self._decoupled(g))
        m, v = _moments(g, d, s[0], s[1], c)
        second = ew.maximum(s[2], v) if g["amsgrad"] else v
        denom = ew.sqrt(second) / c["bias_correction2_sqrt"] + c["eps"]
        return p - m / denom * c["step_size"], (m, v) + ((second,) if g["amsgrad"] else ())


class _MomentsDecoupled(_Rule):
    """What NAdam and RAdam share: Adam's two moments and a choice of decoupled weight decay."""

    settings = "maximize, weight decay on or off, decoupled weight decay, beta1 > 0.5 (torch's lerp branch)"

    def structure(self, g):
        return g["maximize"], bool(g["weight_decay"]), g["decoupled_weight_decay"], _small(1 - g["betas"][0])

    def state_keys(self, g):
        return ("exp_avg", "exp_avg_sq")


class _NAdam(_MomentsDecoupled):
    """`functional.nadam_update`: Adam's moments and a Nesterov step whose two coefficients (from the warming-up
    momentum and the product of its values so far, `mu_product`, kept on the host) are step scalars."""

    def group_scalars(self, g):
        return _moment_scalars(g) | {"eps": g["eps"]} | _decay_scalars(g, g["decoupled_weight_decay"])

    def _coming(self, g, state):
        """(step, (the gradient's coefficient, exp_avg's, the new mu_product)) of the coming step."""
        step, mu_product = state.get("step", 0) + 1, state["mu_product"] if "step" in state else 1.0
        return step, functional.nadam_scalars(g["lr"], g["betas"][0], g["momentum_decay"], step, mu_product)

    def step_scalars(self, g, state):
        step, (grad_value, avg_value, _) = self._coming(g, state)
        return {"bias_correction2": 1 - g["betas"][1] ** step, "grad_value": grad_value, "avg_value": avg_value}

    def init_state(self, g, state, like):
        if "step" not in state:
            state["mu_product"] = 1.0
        super().init_state(g, state, like)

    def trace(self, g, p, grad, c, s):
        p, d = _decayed(g, p, grad, c, g["decoupled_weight_decay"])
        m, v = _moments(g, d, s[0], s[1], c)
        denom = ew.sqrt(v / c["bias_correction2"]) + c["eps"]
        p = p + d * c["grad_value"] / denom  # param.addcdiv_(grad, denom, value=...), then exp_avg's
        return p + m * c["avg_value"] / denom, (m, v)

    def after(self, g, state):
        state["mu_product"] = self._coming(g, state)[1][2]
        state["step"] += 1


class _RAdam(_MomentsDecoupled):
    """`functional.radam_update`: bias-corrected momentum, times the rectified adaptive rate once rho_t > 5.
    Before that the adaptive factor is 1 / 1 and the rectification 1 (exact: the update is unchanged)."""

    def group_scalars(self, g):
        out = _moment_scalars(g) | {"eps": g["eps"], "lr": g["lr"], "one": 1.0}
        return out | _decay_scalars(g, g["decoupled_weight_decay"])

    def step_scalars(self, g, state):
        (beta1, beta2), step = g["betas"], state.get("step", 0) + 1
        rect = functional.radam_rectification(beta2, step)
        on = rect is not None
        return {
            "bias_correction1": 1 - beta1**step,
            "adaptive": 1.0 if on else 0.0,
            "numerator": (1 - beta2**step) ** 0.5 if on else 1.0,
            "rect": rect if on else 1.0,
        }

    def trace(self, g, p, grad, c, s):
        p, d = _decayed(g, p, grad, c, g["decoupled_weight_decay"])
        m, v = _moments(g, d, s[0], s[1], c)
        update = m / c["bias_correction1"] * c["lr"]
        denom = ew.where(c["adaptive"], ew.sqrt(v) + c["eps"], c["one"])
        return p - update * (c["numerator"] / denom) * c["rect"], (m, v)


class _Adamax(_Rule):
    """`functional.adamax_update`: the first moment and a decayed running max of |grad| + eps."""

    settings = "maximize, weight decay on or off, beta1 > 0.5 (torch's lerp branch)"

    def structure(self, g):
        return g["maximize"], bool(g["weight_decay"]), _small(1 - g["betas"][0])

    def state_keys(self, g):
        return ("exp_avg", "exp_inf")

    def group_scalars(self, g):
        out = {"weight": _lerp_weight(1 - g["betas"][0]), "beta2": g["betas"][1], "eps": g["eps"]}
        return out | ({"weight_decay": g["weight_decay"]} if g["weight_decay"] else {})

    def step_scalars(self, g, state):
        return {"neg_clr": -(g["lr"] / (1 - g["betas"][0] ** (state.get("step", 0) + 1)))}

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        m = _lerp(s[0], d, 1 - g["betas"][0], c["weight"])
        inf = ew.maximum(s[1] * c["beta2"], ew.abs(d) + c["eps"])
        return p + m * c["neg_clr"] / inf, (m, inf)


class _Adadelta(_Rule):
    """`functional.adadelta_update`: the gradient scaled by RMS(past updates) / RMS(gradients), times lr."""

    settings = "maximize, weight decay on or off"

    def structure(self, g):
        return g["maximize"], bool(g["weight_decay"])

    def state_keys(self, g):
        return ("square_avg", "acc_delta")

    def group_scalars(self, g):
        out = {"rho": g["rho"], "one_minus_rho": 1 - g["rho"], "eps": g["eps"], "lr": g["lr"]}
        return out | ({"weight_decay": g["weight_decay"]} if g["weight_decay"] else {})

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        square_avg = s[0] * c["rho"] + d * c["one_minus_rho"] * d
        delta = ew.sqrt(s[1] + c["eps"]) / ew.sqrt(square_avg + c["eps"]) * d
        acc_delta = s[1] * c["rho"] + delta * c["one_minus_rho"] * delta
        return p - delta * c["lr"], (square_avg, acc_delta)  # param.add_(delta, alpha=-lr): the same bits


class _Rprop(_Rule):
    """`functional.rprop_update`: per-weight step sizes from the signs of successive gradients. lr is read
    only by `init_state` (the first step's sizes), as eagerly; the step-size bounds are the graph's
    constants, so the clip is numpy's own (its signed zeros differ from maximum/minimum's)."""

    settings = "maximize, step_sizes"

    def structure(self, g):
        return g["maximize"], tuple(g["step_sizes"])

    def state_keys(self, g):
        return ("prev", "step_size")

    def group_scalars(self, g):
        return {"etaminus": g["etas"][0], "etaplus": g["etas"][1], "zero": 0.0, "one": 1.0}

    def init_state(self, g, state, like):
        if "step" not in state:
            xp = like.device.xp
            state |= {"step": 0, "prev": xp.zeros_like(like.array), "step_size": xp.full_like(like.array, g["lr"])}

    def trace(self, g, p, grad, c, s):
        d = -grad if g["maximize"] else grad
        factor = ew.sign(d * s[0])  # then the masked writes, in eager's order
        factor = ew.where(cmp.gt(factor, c["zero"]), c["etaplus"], factor)
        factor = ew.where(cmp.lt(factor, c["zero"]), c["etaminus"], factor)
        factor = ew.where(cmp.eq(factor, c["zero"]), c["one"], factor)
        step_size = ew.clamp(s[1] * factor, *g["step_sizes"])
        d = ew.where(cmp.eq(factor, c["etaminus"]), c["zero"], d)  # a flipped sign moves nothing
        return p - ew.sign(d) * step_size, (d, step_size)


class _ASGD(_Rule):
    """`functional.asgd_update`: a decayed SGD step and the running average `ax`, which copies the
    parameter while mu is 1 (a `where` on the host's flag `copy`); eta and mu advance on the host."""

    settings = "maximize, weight decay on or off"

    def structure(self, g):
        return g["maximize"], bool(g["weight_decay"])

    def state_keys(self, g):
        return ("ax",)

    def group_scalars(self, g):
        return {"weight_decay": g["weight_decay"]} if g["weight_decay"] else {}

    def step_scalars(self, g, state):
        eta, mu = functional.asgd_scalars(state, g["lr"])
        return {"decay": 1 - g["lambd"] * eta, "eta": eta, "mu": mu, "copy": 1.0 if mu == 1 else 0.0}

    def init_state(self, g, state, like):
        if "step" not in state:
            state["eta"], state["mu"] = functional.asgd_scalars(state, g["lr"])
        super().init_state(g, state, like)

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        p = p * c["decay"] - d * c["eta"]  # param.add_(grad, alpha=-eta): the same bits
        ax = s[0]
        return p, (ew.where(c["copy"], p, ax + (p - ax) * c["mu"]),)

    def after(self, g, state):
        state["step"] += 1
        state["eta"], state["mu"] = functional.asgd_next(g["lr"], g["lambd"], g["alpha"], g["t0"], state["step"])


class _RMSprop(_Rule):
    """`functional.rmsprop_update`: running mean of squared gradients, optional centering and momentum."""

    settings = "momentum, centered, maximize, weight decay on or off, alpha > 0.5 (torch's lerp branch)"

    def structure(self, g):
        return g["momentum"] > 0, g["centered"], g["maximize"], bool(g["weight_decay"]), _small(1 - g["alpha"])

    def state_keys(self, g):
        return (
            ("square_avg",)
            + (("momentum_buffer",) if g["momentum"] > 0 else ())
            + (("grad_avg",) if g["centered"] else ())
        )

    def group_scalars(self, g):
        out = {"lr": g["lr"], "alpha": g["alpha"], "one_minus_alpha": 1 - g["alpha"], "eps": g["eps"]}
        out |= {"weight": _lerp_weight(1 - g["alpha"])} if g["centered"] else {}  # grad_avg.lerp_(grad, 1 - alpha)
        out |= {"weight_decay": g["weight_decay"]} if g["weight_decay"] else {}
        return out | ({"momentum": g["momentum"]} if g["momentum"] > 0 else {})

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        square_avg = s[0] * c["alpha"] + d * c["one_minus_alpha"] * d
        new = [square_avg]
        if g["centered"]:
            grad_avg = _lerp(s[-1], d, 1 - g["alpha"], c["weight"])
            avg = ew.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = ew.sqrt(square_avg)
        avg = avg + c["eps"]
        if g["momentum"] > 0:
            buf = s[1] * c["momentum"] + d / avg
            new.append(buf)
            p = p - buf * c["lr"]
        else:
            p = p - d / avg * c["lr"]
        return p, tuple(new) + ((grad_avg,) if g["centered"] else ())


class _Adagrad(_Rule):
    """`functional.adagrad_update`: divide by the root of the summed squared gradients, decaying step size."""

    settings = "maximize, weight decay on or off"

    def structure(self, g):
        return g["maximize"], bool(g["weight_decay"])

    def state_keys(self, g):
        return ("sum",)

    def group_scalars(self, g):
        return {"eps": g["eps"]} | ({"weight_decay": g["weight_decay"]} if g["weight_decay"] else {})

    def step_scalars(self, g, state):
        return {"clr": g["lr"] / (1 + state.get("step", 0) * g["lr_decay"])}  # the coming step's rate

    def init_state(self, g, state, like):
        if "step" not in state:
            state |= {"step": 0, "sum": like.device.xp.full_like(like.array, g["initial_accumulator_value"])}

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        total = s[0] + d * d
        return p - d / (ew.sqrt(total) + c["eps"]) * c["clr"], (total,)


# ---- shared pieces ------------------------------------------------------------------------------
def _regularized(g, p, grad, weight_decay):
    """torch's `(-grad if maximize else grad) + weight_decay * param`, in `functional._regularized`'s order."""
    if weight_decay is not None:
        decayed = p * weight_decay
        return decayed - grad if g["maximize"] else decayed + grad
    return -grad if g["maximize"] else grad


def _decay_scalars(g, decoupled):
    """The Adam family's weight decay scalars: the parameter's shrink factor (decoupled) or the L2 factor."""
    if not g["weight_decay"]:
        return {}
    return {"decay": 1 - g["lr"] * g["weight_decay"]} if decoupled else {"weight_decay": g["weight_decay"]}


def _decayed(g, p, grad, c, decoupled):
    """(parameter, gradient) after the Adam family's weight decay (`functional._decayed`)."""
    if decoupled:
        return (p * c["decay"] if g["weight_decay"] else p), _regularized(g, p, grad, None)
    return p, _regularized(g, p, grad, c.get("weight_decay"))


def _small(weight):
    """Which of torch's two lerp branches a weight takes (part of a rule's structure)."""
    return weight < 0.5


def _lerp_weight(weight):
    """The scalar `_lerp` multiplies by: the weight, or 1 - weight on torch's other branch."""
    return weight if _small(weight) else 1 - weight


def _lerp(start, end, weight, scaled):
    """start.lerp(end, weight) as `functional._lerp_` (`scaled` holds `_lerp_weight(weight)`)."""
    diff = end - start
    return start + diff * scaled if _small(weight) else end - diff * scaled


def _moment_scalars(g):
    return {"weight": _lerp_weight(1 - g["betas"][0]), "beta2": g["betas"][1], "one_minus_beta2": 1 - g["betas"][1]}


def _moments(g, d, m, v, c):
    """The Adam family's moments as `functional._moments`: m.lerp(d, 1 - beta1), v·beta2 + d·(1 - beta2)·d."""
    return _lerp(m, d, 1 - g["betas"][0], c["weight"]), v * c["beta2"] + d * c["one_minus_beta2"] * d


RULES = {
    "sgd": _SGD(), "adam": _Adam(), "rmsprop": _RMSprop(), "adagrad": _Adagrad(),
    "nadam": _NAdam(), "radam": _RAdam(), "adamax": _Adamax(), "adadelta": _Adadelta(), "rprop": _Rprop(),
    "asgd": _ASGD(),
}  # fmt: skip
