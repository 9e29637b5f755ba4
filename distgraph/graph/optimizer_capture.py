"""An optimizer's step traced into a captured training step: its state becomes graph inputs and outputs.

`dg.compile(model, ..., loss_fn=..., optimizer=opt)` makes forward, backward and update one graph whose
inputs are the batch, the optimizer's per-call scalars, its state arrays and the parameters, and whose
outputs are the loss, the updated parameters and the updated state. The runner writes the last two
back into the very arrays they came from, so `optimizer.state` stays the one truth: eager steps (a
fallback, a user's own `opt.step()`), `state_dict()` and checkpoints interleave with compiled steps.

The eager update rule (`optim.functional`) works in place on arrays, which a graph cannot record, so
each rule is written here once more with distgraph ops, operation for operation in the same order
(tests check the two give the same bits, step after step). What varies from call to call without
changing the graph is an input refreshed before every call, computed on the host exactly as the eager
rule computes it: the learning rate (schedulers keep working), Adam's bias corrections of the coming
step, Adagrad's decayed rate, SGD's first step (which copies the gradient into the momentum buffer). What shapes the graph
(momentum on or off, nesterov, amsgrad, centered, maximize, weight decay on or off) is fixed at capture; a call
after one of those changed is refused with a clear error rather than run with the old structure.
"""

import math

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.ops import elementwise as ew


class _SGD:
    """`functional.sgd_update`: weight decay, maximize, momentum with dampening, nesterov."""

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

    def after(self, state):
        pass


class _Adam:
    """`functional.adam_update` (AdamW: `decoupled`): bias-corrected moments, optional amsgrad."""

    def __init__(self, decoupled):
        self.decoupled = decoupled

    def _decoupled(self, g):
        return self.decoupled or g.get("decoupled_weight_decay", False)

    def structure(self, g):
        return g["amsgrad"], g["maximize"], bool(g["weight_decay"]), self._decoupled(g), 1 - g["betas"][0] < 0.5

    def state_keys(self, g):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ())

    def group_scalars(self, g):
        weight = 1 - g["betas"][0]  # exp_avg.lerp_(grad, 1 - beta1), with torch's two branches
        out = {"weight": weight if weight < 0.5 else 1 - weight, "beta2": g["betas"][1], "eps": g["eps"]}
        out["one_minus_beta2"] = 1 - g["betas"][1]
        if g["weight_decay"]:
            out |= (
                {"decay": 1 - g["lr"] * g["weight_decay"]}
                if self._decoupled(g)
                else {"weight_decay": g["weight_decay"]}
            )
        return out

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
        if self._decoupled(g):
            if g["weight_decay"]:
                p = p * c["decay"]
            d = _regularized(g, p, grad, None)
        else:
            d = _regularized(g, p, grad, c.get("weight_decay"))
        m, v = s[0], s[1]
        diff = d - m
        m = m + diff * c["weight"] if 1 - g["betas"][0] < 0.5 else d - diff * c["weight"]
        v = v * c["beta2"] + d * c["one_minus_beta2"] * d
        second = ew.maximum(s[2], v) if g["amsgrad"] else v
        denom = ew.sqrt(second) / c["bias_correction2_sqrt"] + c["eps"]
        return p - m / denom * c["step_size"], (m, v) + ((second,) if g["amsgrad"] else ())

    def after(self, state):
        state["step"] += 1


class _RMSprop:
    """`functional.rmsprop_update`: running mean of squared gradients, optional centering and momentum."""

    def structure(self, g):
        return g["momentum"] > 0, g["centered"], g["maximize"], bool(g["weight_decay"]), 1 - g["alpha"] < 0.5

    def state_keys(self, g):
        return (
            ("square_avg",)
            + (("momentum_buffer",) if g["momentum"] > 0 else ())
            + (("grad_avg",) if g["centered"] else ())
        )

    def group_scalars(self, g):
        weight = 1 - g["alpha"]  # grad_avg.lerp_(grad, 1 - alpha)
        out = {"lr": g["lr"], "alpha": g["alpha"], "one_minus_alpha": 1 - g["alpha"], "eps": g["eps"]}
        out |= {"weight": weight if weight < 0.5 else 1 - weight} if g["centered"] else {}
        out |= {"weight_decay": g["weight_decay"]} if g["weight_decay"] else {}
        return out | ({"momentum": g["momentum"]} if g["momentum"] > 0 else {})

    def step_scalars(self, g, state):
        return {}

    def init_state(self, g, state, like):
        zeros = like.device.xp.zeros_like
        if "step" not in state:
            state |= {"step": 0, "square_avg": zeros(like.array)}
            if g["momentum"] > 0:
                state["momentum_buffer"] = zeros(like.array)
            if g["centered"]:
                state["grad_avg"] = zeros(like.array)

    def trace(self, g, p, grad, c, s):
        d = _regularized(g, p, grad, c.get("weight_decay"))
        square_avg = s[0] * c["alpha"] + d * c["one_minus_alpha"] * d
        new = [square_avg]
        if g["centered"]:
            grad_avg = s[-1]
            diff = d - grad_avg
            grad_avg = grad_avg + diff * c["weight"] if 1 - g["alpha"] < 0.5 else d - diff * c["weight"]
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

    def after(self, state):
        state["step"] += 1


class _Adagrad:
    """`functional.adagrad_update`: divide by the root of the summed squared gradients, decaying step size."""

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

    def after(self, state):
        state["step"] += 1


def _regularized(g, p, grad, weight_decay):
    """torch's `(-grad if maximize else grad) + weight_decay * param`, in `functional._regularized`'s order."""
    if weight_decay is not None:
        decayed = p * weight_decay
        return decayed - grad if g["maximize"] else decayed + grad
    return -grad if g["maximize"] else grad


RULES = {
    "sgd": _SGD(), "adam": _Adam(decoupled=False), "adamw": _Adam(decoupled=True), "rmsprop": _RMSprop(),
    "adagrad": _Adagrad(),
}  # fmt: skip


class CapturedUpdate:
    """`optimizer.step()` as traced ops, for `capture(..., update=self.trace, hyper=self.tensors)`.

    `tensors` (graph inputs after the explicit ones) are the scalars of each (param group, dtype),
    then each parameter's own scalars (those that follow its state: its step count), then each
    parameter's state arrays (`n_states` of them, written back by the runner). `arrays()` gives their
    values before a call, `after()` advances the host-side state (Adam's step) once the call has run.
    A plain SGD step thus costs one learning-rate store per group and dtype before each call."""

    def __init__(self, optimizer, params):
        name = type(optimizer).__name__
        if params is None:
            raise ConfigError("dg.compile: optimizer= needs loss_fn= (it captures a training step)")
        self.rule = RULES.get(optimizer.update_name)
        if self.rule is None:
            raise ConfigError(
                f"dg.compile: optimizer capture supports {', '.join(sorted(RULES))}, got {name}; compile "
                "without optimizer= and call optimizer.step() after the compiled step"
            )
        self.optimizer, self.name, rule = optimizer, name, self.rule
        index = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        missing = [i for i, p in enumerate(params) if id(p) not in index]
        if missing:
            raise ConfigError(f"dg.compile: model parameters {missing} are not in the optimizer")
        groups = optimizer.param_groups
        self.structure = [rule.structure(g) for g in groups]
        shared = {}  # (group, dtype) -> {name: 0-d array}
        self._per_param = []  # (param, group, {name: 0-d array} of its step scalars, state keys)
        tensors = {"shared": [], "own": [], "state": []}
        self._scalars = []  # per parameter: {name: Tensor} the trace reads
        self._states = []  # per parameter: state Tensors the trace reads
        for p in params:
            g, xp, dtype = groups[index[id(p)]], p.device.xp, p.array.dtype
            key = (index[id(p)], dtype)
            if key not in shared:
                # the values of the first step, not zeros: the capture runs the update on them (0 / 0 warned)
                shared[key] = {k: xp.asarray(v, dtype) for k, v in rule.group_scalars(g).items()}
                tensors["shared"] += [Tensor(a, device=p.device) for a in shared[key].values()]
            own = {k: xp.asarray(v, dtype) for k, v in rule.step_scalars(g, optimizer.state.get(p, {})).items()}
            tensors["own"] += [Tensor(a, device=p.device) for a in own.values()]
            by_array = {id(t.array): t for t in tensors["shared"] + tensors["own"]}
            self._scalars.append({k: by_array[id(a)] for k, a in (shared[key] | own).items()})
            # the state as the first call will see it, made on a copy: a state the eager rule has not
            # made yet stays absent (SGD's first step copies the gradient into a new buffer)
            keys = rule.state_keys(g)
            example = dict(optimizer.state.get(p, {}))
            if keys:
                rule.init_state(g, example, p)
            self._states.append(tuple(Tensor(example[k], device=p.device) for k in keys))
            tensors["state"] += self._states[-1]
            self._per_param.append((p, g, own, keys))
        self._shared = [(groups[gi], arrays) for (gi, _), arrays in shared.items()]
        self._index = [i for i, s in enumerate(self._per_param) if s[2] or s[3]]  # into _per_param
        self._stateful = [self._per_param[i] for i in self._index]
        self.skipped = set()  # ids of the parameters the captured loss does not depend on (see `trace`)
        self.tensors = tuple(tensors["shared"] + tensors["own"] + tensors["state"])
        self.n_states = len(tensors["state"])

    def arrays(self):
        """Every input's current value: the scalars of the coming step, then the state arrays (made on the
        first call as the eager rule would). Refuses a call whose param groups changed the graph's shape."""
        rule, state = self.rule, self.optimizer.state
        for i, g in enumerate(self.optimizer.param_groups):
            if rule.structure(g) != self.structure[i]:
                raise ConfigError(
                    f"dg.compile: {self.name} param group {i} changed a setting the captured step is built on "
                    f"({self.structure[i]} -> {rule.structure(g)}: momentum/nesterov/amsgrad/maximize/weight "
                    "decay on or off); compile the step again"
                )
        out = []
        for g, arrays in self._shared:
            for k, v in rule.group_scalars(g).items():
                arrays[k][()] = v
            out += arrays.values()
        states = []
        for i, (p, g, own, keys) in enumerate(self._stateful):
            if id(p) in self.skipped:  # not stepped: its state is left absent or as it is, as eagerly
                out += own.values()
                states += [t.array for t in self._states[self._index[i]]]
                continue
            st = state[p]
            for k, v in rule.step_scalars(g, st).items():  # before init_state: it reads what the state lacks
                own[k][()] = v
            out += own.values()
            if keys:
                rule.init_state(g, st, p)
                states += [st[k] for k in keys]
        return out + states

    def after(self):
        state = self.optimizer.state
        for p, *_ in self._stateful:
            if id(p) not in self.skipped:
                self.rule.after(state[p])

    def trace(self, params, grads):
        """The updated parameters, then the updated state arrays, as traced distgraph ops."""
        new_params, new_states = [], []
        self.skipped = {id(p) for p, grad in zip(params, grads) if grad is None}
        with grad_mode.no_grad():
            for (_, g, _, _), p, grad, c, s in zip(self._per_param, params, grads, self._scalars, self._states):
                if grad is None:  # the loss does not depend on p: eager's step skips it (grad None)
                    new_params.append(p)
                    new_states += s
                    continue
                new_p, new_s = self.rule.trace(g, p, grad, c, s)
                new_params.append(new_p)
                new_states += new_s
        return new_params + new_states
