"""An optimizer's step traced into a captured training step: its state becomes graph inputs and outputs.

`dg.compile(model, ..., loss_fn=..., optimizer=opt)` makes forward, backward and update one graph whose
inputs are the batch, the optimizer's per-call scalars, its state arrays and the parameters, and whose
outputs are the loss, the updated parameters and the updated state. The runner writes the last two
back into the very arrays they came from, so `optimizer.state` stays the one truth: eager steps (a
fallback, a user's own `opt.step()`), `state_dict()` and checkpoints interleave with compiled steps.

The eager update rule (`optim.functional`) works in place on arrays, which a graph cannot record, so
each rule is written once more with distgraph ops (`optimizer_rules.py`: SGD, Adam, AdamW, NAdam, RAdam,
Adamax, RMSprop, Adagrad, Adadelta, Rprop, ASGD), operation for operation in the same order (tests check
the two give the same bits, step after step). What varies from call to call without changing the graph
is an input refreshed before every call, computed on the host exactly as the eager rule computes it:
the learning rate (schedulers keep working), Adam's bias corrections of the coming step, NAdam's
momentum coefficients, RAdam's rectification, ASGD's eta and mu, SGD's first step (which copies the
gradient into the momentum buffer). What shapes the graph (momentum on or off, nesterov, amsgrad,
centered, maximize, weight decay on or off, Rprop's step-size bounds) is fixed at capture; a call after
one of those changed is refused with a clear error rather than run with the old structure.
"""

from distgraph.autograd import grad_mode
from distgraph.autograd.tensor import Tensor
from distgraph.errors import ConfigError
from distgraph.graph.optimizer_rules import RULES
from distgraph.optim.state_tensors import raw, settle


class CapturedUpdate:
    """`optimizer.step()` as traced ops, for `capture(..., update=self.trace, hyper=self.tensors)`.

    `tensors` (graph inputs after the explicit ones) are the scalars of each (param group, dtype),
    then each parameter's own scalars (those that follow its state: its step count), then each
    parameter's state arrays (`n_states` of them, written back by the runner). `arrays()` gives their
    values before a call, `after()` advances the host-side state (the step count, NAdam's mu_product,
    ASGD's eta and mu) once the call has run. A plain SGD step thus costs one learning-rate store per
    group and dtype before each call."""

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
            own = {k: xp.asarray(v, dtype) for k, v in rule.step_scalars(g, raw(optimizer.state.get(p, {}))).items()}
            tensors["own"] += [Tensor(a, device=p.device) for a in own.values()]
            by_array = {id(t.array): t for t in tensors["shared"] + tensors["own"]}
            self._scalars.append({k: by_array[id(a)] for k, a in (shared[key] | own).items()})
            # the state as the first call will see it, made on a copy: a state the eager rule has not
            # made yet stays absent (SGD's first step copies the gradient into a new buffer)
            keys = rule.state_keys(g)
            example = dict(raw(optimizer.state.get(p, {})))
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
                    f"({rule.settings}: {self.structure[i]} -> {rule.structure(g)}); compile the step again"
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
            st = raw(state[p])
            for k, v in rule.step_scalars(g, st).items():  # before init_state: it reads what the state lacks
                own[k][()] = v
            out += own.values()
            if keys:
                rule.init_state(g, st, p)
                states += [st[k] for k in keys]
        return out + states

    def after(self):
        state = self.optimizer.state
        for p, g, *_ in self._stateful:
            if id(p) not in self.skipped:
                self.rule.after(g, raw(state[p]))
                settle(state[p])

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
