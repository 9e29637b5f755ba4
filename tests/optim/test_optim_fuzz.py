"""Random training runs, distgraph.optim against torch.optim (float64): updates, state, groups, schedules, errors.

Each seed draws (from `optim_menu`) a few float64 parameters of assorted shapes, some not requiring grad;
an optimizer with random options and one to three param groups with their own options, the last group
sometimes added mid-run with add_param_group; optionally a scheduler (SequentialLR and ChainedScheduler
wrap others; ReduceLROnPlateau gets a drawn metric) stepped after every optimizer step. Every step zeroes
the gradients (set_to_none drawn), back-propagates the same random weights into some parameters (the
others keep a None or zero gradient) and steps both libraries. Once per some seeds both optimizers and
schedulers are saved with state_dict() and loaded into fresh ones mid-run, distgraph's sometimes through
dg.save / dg.load on a file. After every step both must agree on the parameters, each parameter's state
(torch's key names, values to 1e-12), every group's options and the scheduler's get_last_lr().

Options include torch's implementation options (foreach, fused, capturable, differentiable) at values both
libraries accept, and every group must hold the same keys with the same values as torch's.

Other seeds draw an option torch refuses (a negative lr, betas outside [0, 1), nesterov without momentum,
fused=True with foreach=True or differentiable=True or on an integer parameter, a scheduler factor out of
range, ...): distgraph must refuse too, naming the optimizer or scheduler and the option.

`python tests/optim/test_optim_fuzz.py START STOP` runs many more seeds and prints every divergence.
"""

import functools
import operator
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import distgraph as dg
from tests.optim.optim_menu import (
    BAD_SCHEDULERS,
    OPTIONS,
    build_scheduler,
    draw_bad,
    draw_group_overrides,
    draw_options,
    draw_scheduler,
)

torch = pytest.importorskip("torch")

N_STEPS = 8
SHAPES = [(3, 4), (4,), (), (2, 3, 2), (1,)]
TOL = 1e-12


class World:
    """One library's side of a run: its parameters, optimizer and scheduler, built from the shared draw."""

    def __init__(self, lib, arrays, flags, name, specs, defaults, sched_spec):
        self.lib, self.m = lib, dg if lib == "dg" else torch
        self.optim = self.m.optim
        self.params = [self.m.tensor(a.copy(), requires_grad=f) for a, f in zip(arrays, flags)]
        self.name, self.specs, self.defaults, self.sched_spec = name, specs, defaults, sched_spec
        self.added = None
        self.opt, self.sched = self._build()

    def _build(self):
        groups = [{"params": [self.params[i] for i in idx], **over} for idx, over in self.specs]
        if len(groups) == 1 and not self.specs[0][1]:
            groups = groups[0]["params"]  # a plain list of parameters
        opt = getattr(self.optim, self.name)(groups, **self.defaults)
        if self.added is not None:
            self._add(opt, self.added)
        sched = build_scheduler(self.sched_spec, self.optim.lr_scheduler, opt) if self.sched_spec else None
        return opt, sched

    def _add(self, opt, late):
        idx, over = late
        opt.add_param_group({"params": [self.params[i] for i in idx], **over})

    def add_group(self, late):
        self.added = late
        self._add(self.opt, late)

    def step(self, set_to_none, weights, metric):
        self.opt.zero_grad(set_to_none=set_to_none)
        terms = [(p * self.m.tensor(w)).sum() for p, w in zip(self.params, weights) if w is not None]
        if terms:
            functools.reduce(operator.add, terms).backward()
        self.opt.step()
        if self.sched is None:
            return
        if self.sched_spec[0] == "ReduceLROnPlateau":
            self.sched.step(metric)
        else:
            self.sched.step()

    def reload(self, path):
        """Save the optimizer and scheduler, build fresh ones (the user's resume order: build both, then
        load both) and load the saved state into them; distgraph's through a file when `path` is given."""
        saved = {"opt": self.opt.state_dict(), "sched": self.sched.state_dict() if self.sched else None}
        if path is not None:
            dg.save(saved, path)
            saved = dg.load(path)
        self.opt, self.sched = self._build()
        self.opt.load_state_dict(saved["opt"])
        if self.m is torch:
            _keep_mu_product_float32(self.opt)
        if self.sched is not None:
            self.sched.load_state_dict(saved["sched"])


def _keep_mu_product_float32(opt):
    """A deliberate difference: torch's load_state_dict casts NAdam's mu_product (a float32 0-d tensor)
    to a float64 parameter's dtype, so torch's resumed run leaves its uninterrupted one; distgraph keeps
    it float32 and a resume gives the uninterrupted run's bits
    (`test_optim_fuzz_regressions.py::test_a_resumed_nadam_gives_the_bits_of_an_uninterrupted_run`).
    The torch side is put back to float32 so that everything else is still compared."""
    for state in opt.state.values():
        if "mu_product" in state:
            state["mu_product"] = state["mu_product"].to(torch.float32)


def _value(v):
    """A state or option value as a numpy array (torch tensors, arrays, Python numbers and tuples)."""
    if hasattr(v, "detach"):
        v = v.detach().numpy()
    elif hasattr(v, "numpy"):
        v = v.numpy()
    return np.asarray(v, dtype=np.float64)


def _close(a, b):
    a, b = _value(a), _value(b)
    if a.shape != b.shape:
        return False
    if not a.size:
        return True
    same_inf = (a == b) | (np.isnan(a) & np.isnan(b))
    return bool(np.all(same_inf | (np.abs(a - b) <= TOL * (1 + np.abs(b)))))


def _compare(d, t):
    """The first disagreement between the two worlds, or None."""
    for i, (p, q) in enumerate(zip(d.params, t.params)):
        if not _close(p.detach().numpy(), q.detach().numpy()):
            diff = np.abs(p.detach().numpy() - q.detach().numpy()).max()
            return f"param {i} {tuple(q.shape)}: max diff {diff:.3g}"
        ds, ts = d.opt.state.get(p, {}), t.opt.state.get(q, {})
        if set(ds) != set(ts):
            return f"param {i} state keys: distgraph {sorted(ds)}, torch {sorted(ts)}"
        for k in ts:
            if not _close(ds[k], ts[k]):
                return f"param {i} state {k!r}: distgraph {_value(ds[k])}, torch {_value(ts[k])}"
    if len(d.opt.param_groups) != len(t.opt.param_groups):
        return f"{len(d.opt.param_groups)} param groups, torch {len(t.opt.param_groups)}"
    for j, (g, h) in enumerate(zip(d.opt.param_groups, t.opt.param_groups)):
        dk, tk = set(g) - {"params"}, set(h) - {"params"}
        if dk != tk:
            return f"group {j} keys: distgraph only {sorted(dk - tk)}, torch only {sorted(tk - dk)}"
        for k in dk:
            exact = g[k] is None or h[k] is None or isinstance(g[k], bool) or isinstance(h[k], bool)
            if (g[k] != h[k] or type(g[k]) is not type(h[k])) if exact else not _close(g[k], h[k]):
                return f"group {j} option {k!r}: distgraph {g[k]!r}, torch {h[k]!r}"
        if [_index(d.params, p) for p in g["params"]] != [_index(t.params, q) for q in h["params"]]:
            return f"group {j} holds other parameters"
    if d.sched is not None and not _close(d.sched.get_last_lr(), t.sched.get_last_lr()):
        return f"get_last_lr: distgraph {d.sched.get_last_lr()}, torch {t.sched.get_last_lr()}"
    return None


def _index(params, q):
    return next(i for i, p in enumerate(params) if p is q)


def _both(trace, what, d_fn, t_fn):
    """Run one phase in both libraries: (outcome, divergence); outcome 'stop' when both raised."""
    errs = []
    for fn in (d_fn, t_fn):
        try:
            fn()
            errs.append(None)
        except Exception as e:  # noqa: BLE001 - any refusal counts; only agreement is checked
            errs.append(e)
    trace.append(f"{what}" + (f"  [distgraph: {errs[0]!r}] [torch: {errs[1]!r}]" if any(errs) else ""))
    if (errs[0] is None) != (errs[1] is None):
        return "stop", f"{what}: distgraph raised {errs[0]!r}, torch raised {errs[1]!r}"
    return ("stop" if errs[0] else "go"), None


def _draw_groups(rng, name, n, defaults):
    """One to three param groups over parameters 0..n-1 in order: [(indices, per-group options)]."""
    k = int(rng.integers(1, min(3, n) + 1))
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, n), k - 1, replace=False)) if k > 1 else []
    bounds = [0, *cuts, n]
    return [
        (list(range(a, b)), draw_group_overrides(rng, name, defaults) if rng.random() < 0.5 else {})
        for a, b in zip(bounds, bounds[1:])
    ]


def run_seed(seed, tmp_dir):
    """Run one seed: (trace of what was done, the first divergence or None)."""
    rng = np.random.default_rng(seed)
    trace = []
    if rng.random() < 0.15:
        return trace, _refusal(rng, trace)
    name = list(OPTIONS)[int(rng.integers(len(OPTIONS)))]
    defaults = draw_options(rng, name)
    n = int(rng.integers(2, 5))
    arrays = [rng.standard_normal(SHAPES[int(rng.integers(len(SHAPES)))]) for _ in range(n)]
    flags = [bool(rng.random() < 0.85) for _ in range(n)]
    specs = _draw_groups(rng, name, n, defaults)
    late = specs.pop() if len(specs) > 1 and rng.random() < 0.4 else None
    add_at = int(rng.integers(0, N_STEPS)) if late else -1
    sched_spec = draw_scheduler(rng, N_STEPS, name) if rng.random() < 0.7 else None
    save_at = int(rng.integers(1, N_STEPS)) if rng.random() < 0.5 else -1
    path = Path(tmp_dir) / f"resume{seed}.dg" if rng.random() < 0.5 else None
    trace.append(f"{name}({defaults}) groups {specs} late {late}@{add_at} sched {sched_spec} reload@{save_at} {path}")
    worlds = {}
    for lib in ("dg", "torch"):
        try:
            worlds[lib] = World(lib, arrays, flags, name, specs, defaults, sched_spec)
        except Exception as e:  # noqa: BLE001
            worlds[lib] = e
    outcome, bad = _both(trace, "build", *(_raise_if_error(worlds[k]) for k in ("dg", "torch")))
    if outcome == "stop":
        return trace, bad
    d, t = worlds["dg"], worlds["torch"]
    if bad := _compare(d, t):
        return trace, f"after build: {bad}"
    for step in range(N_STEPS):
        if step == add_at:
            outcome, bad = _both(trace, f"add_param_group {late}", lambda: d.add_group(late), lambda: t.add_group(late))
            if outcome == "stop":
                return trace, bad
        if step == save_at:
            outcome, bad = _both(trace, "state_dict reload", lambda: d.reload(path), lambda: t.reload(None))
            if outcome == "stop":
                return trace, bad
            if bad := _compare(d, t):
                return trace, f"after reload: {bad}"
        set_to_none = bool(rng.integers(2))
        weights = [rng.standard_normal(a.shape) if f and rng.random() < 0.8 else None for a, f in zip(arrays, flags)]
        metric = float(rng.choice([1.0, 0.9, 1.1, 0.5]))
        outcome, bad = _both(
            trace,
            f"step {step} set_to_none={set_to_none} grads {[w is not None for w in weights]} metric {metric}",
            lambda: d.step(set_to_none, weights, metric),
            lambda: t.step(set_to_none, weights, metric),
        )
        if outcome == "stop":
            return trace, bad
        if bad := _compare(d, t):
            return trace, f"after step {step}: {bad}"
    return trace, None


def _raise_if_error(obj):
    def fn():
        if isinstance(obj, Exception):
            raise obj

    return fn


def _refusal(rng, trace):
    """Draw one option torch refuses: distgraph must refuse too, naming the optimizer/scheduler and option."""
    if rng.random() < 0.6:
        name = list(OPTIONS)[int(rng.integers(len(OPTIONS)))]
        opts, key, dtype = draw_bad(rng, name)
        trace.append(f"{name}({opts}) on a {dtype} parameter: bad {key}")
        run = {lib: lambda m=m: _run_optimizer(m, name, opts, dtype) for lib, m in _LIBS}
    else:
        name, kw, key = BAD_SCHEDULERS[int(rng.integers(len(BAD_SCHEDULERS)))]
        trace.append(f"{name}({kw}): bad {key}")
        run = {lib: lambda m=m: _run_scheduler(m, (name, kw)) for lib, m in _LIBS}
    errs = {}
    for lib, fn in run.items():
        try:
            fn()
            errs[lib] = None
        except Exception as e:  # noqa: BLE001
            errs[lib] = e
    if (errs["dg"] is None) != (errs["torch"] is None):
        return f"distgraph raised {errs['dg']!r}, torch raised {errs['torch']!r}"
    if errs["dg"] is not None and (name not in str(errs["dg"]) or key not in str(errs["dg"])):
        return f"distgraph's message names not both {name!r} and {key!r}: {errs['dg']}"
    return None


def _run_optimizer(m, name, opts, dtype):
    """Build optimizer `name` on one parameter of `dtype` and take a step (where torch refuses a fused
    step on an integer parameter); an integer parameter cannot require grad: its gradient is set."""
    floating = dtype.startswith("float")
    p = m.zeros(3, dtype=getattr(m, dtype), requires_grad=floating)
    opt = getattr(m.optim, name)([p], **opts)
    p.grad = m.ones(3, dtype=getattr(m, dtype))
    opt.step()


def _run_scheduler(m, spec):
    opt = m.optim.SGD([m.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    sched = build_scheduler(spec, m.optim.lr_scheduler, opt)
    for _ in range(4):
        opt.step()
        sched.step(1.0) if spec[0] == "ReduceLROnPlateau" else sched.step()


_LIBS = (("dg", dg), ("torch", torch))


@pytest.mark.parametrize("seed", range(200))
def test_random_training_run_matches_torch(seed, tmp_path):
    trace, bad = run_seed(seed, tmp_path)
    assert bad is None, f"seed {seed}\n" + "\n".join(trace) + f"\n-> {bad}"


if __name__ == "__main__":  # hunting mode: many seeds, every divergence printed
    start, stop = int(sys.argv[1]), int(sys.argv[2])
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(start, stop):
            trace, bad = run_seed(seed, tmp)
            if bad:
                failures += 1
                print(f"=== seed {seed}\n  " + "\n  ".join(trace) + f"\n  -> {bad}\n")
    print(f"{failures} of {stop - start} seeds diverge")
