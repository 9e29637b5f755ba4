"""Random sequences of autograd API calls, distgraph against torch: flags, gradients, hooks and refusals.

Each seed draws a short program over small float64 tensors (two leaves that require grad, one that does
not, and whatever the program makes): ops that save tensors for backward, backward (twice, with and
without retain_graph, on non-scalars with and without a gradient, with inputs=...), autograd.grad (its
allow_unused, materialize_grads, grad_outputs, create_graph, retain_graph and only_inputs), requires_grad_,
detach / detach_, retain_grad, register_hook (logging, or returning a new gradient; handles removed),
register_post_accumulate_grad_hook, nested no_grad / enable_grad / set_grad_enabled / inference_mode (as
contexts and as decorators), views made in each mode, .grad assignment (wrong shape, dtype, type),
zero_ and other in-place writes (on leaves, on tensors saved for backward, under no_grad), and .data.
The same calls run on both libraries; after every step both must agree on what the step returned (or
both raise), on every tensor's values, requires_grad, is_leaf, grad_fn-is-None, .grad, version and
inference flag, and on the hooks called so far.

Where torch's behaviour is an accident of its implementation, distgraph does not copy it and the
program avoids it or stops comparing there; each place says why (FREED, PARTIAL below; detach, data,
grad). `python tests/autograd/test_autograd_api_fuzz.py START STOP` runs more seeds and prints each
divergence (none of seeds 0-4999 at N_STEPS = 10, nor of seeds 3000-3999 at 16).
"""

import collections
import sys
import warnings

import numpy as np
import pytest

import distgraph as dg

torch = pytest.importorskip("torch")

N_STEPS = 10
# FREED: torch refuses a second backward through a graph without retain_graph only where one of its
# nodes saved a tensor (x * y does, x + y and views do not): which op saves what is its implementation's
# business, and torch documents that the graph is freed. distgraph refuses any second backward through a
# freed graph; where only torch goes on, a program is compared up to that step.
# PARTIAL: where a backward raises midway, torch has accumulated into the .grad of the leaves it reached
# first, in its engine's order; distgraph fills every .grad at the end, so a refused backward changes none.
STOPPED = collections.Counter()  # seeds compared only up to such a step (reported by __main__)


class Raised:
    """A refusal: equal to any other (the libraries word them apart), shown with its message."""

    def __init__(self, exc):
        self.text = f"{type(exc).__name__}: {str(exc)[:200]}"

    def __eq__(self, other):
        return isinstance(other, Raised)

    def __repr__(self):
        return f"raises({self.text})"


class Env:
    """One library's side of a program: its tensors (by index, the same on both sides), hook handles
    and the log the hooks write."""

    def __init__(self, lib, arrays):
        self.lib = lib
        self.ts = [lib.tensor(a.copy(), requires_grad=i < 2) for i, a in enumerate(arrays)]
        self.handles = []
        self.log = []
        self.unversioned = set()  # indices of autograd.grad's results: see snapshot
        self.odd = set()  # indices of detached inference tensors: see detach

    def pick(self, r):
        return self.ts[r % len(self.ts)]

    def ones(self, t, scale=1.0):
        return self.lib.full(tuple(t.shape), scale, dtype=self.lib.float64)


# ---- the steps: each `step(env, p)` with p the drawn parameters; what it returns is compared ----------
BINARY = [
    lambda a, b: a * b,  # saves both
    lambda a, b: a + b,
    lambda a, b: a.exp() * b,  # exp saves its output
    lambda a, b: (a * a).sum(),  # a scalar
    lambda a, b: a.sin() - b,
]
VIEWS = [lambda t: t[:], lambda t: t.view(-1), lambda t: t.unsqueeze(0)]


def make(env, p):
    env.ts.append(BINARY[p["op"]](env.pick(p["i"]), env.pick(p["j"])))


def view(env, p):
    _share_version(env, p["i"] % len(env.ts))
    env.ts.append(VIEWS[p["op"] % len(VIEWS)](env.pick(p["i"])))


def backward(env, p):
    t = env.pick(p["last"])
    gradient = None if p["k"] == 0 else env.ones(t, p["k"]) if p["k"] < 3 else env.lib.ones(2, dtype=t.dtype)
    t.backward(gradient, retain_graph=(None, True, False)[p["r"]])


def grad(env, p):
    out = env.pick(p["last"])
    inputs = [env.pick(p["i"])] + ([env.pick(p["j"])] if p["two"] else [])
    kwargs = {"create_graph": bool(p["c"]), "only_inputs": True}
    if p["r"]:
        kwargs["retain_graph"] = p["r"] == 1
    if p["u"]:
        kwargs["allow_unused"] = p["u"] == 1
    if p["m"]:
        kwargs["materialize_grads"] = True
    if p["k"]:
        kwargs["grad_outputs"] = env.ones(out, p["k"])
    # (out * 1, not out: torch calls the hooks of a lone output's own node even where it need not run,
    # and not when there are several outputs, an accident of its engine distgraph does not copy)
    grads = env.lib.autograd.grad(out * 1, inputs, **kwargs)
    for g in grads:
        if g is not None:  # with create_graph, a later backward goes through them
            env.unversioned.add(len(env.ts))
            env.ts.append(g)
    return grads


def backward_inputs(env, p):
    t = env.pick(p["last"])
    inputs = [env.pick(p["i"])] + ([env.pick(p["j"])] if p["two"] else [])
    t.sum().backward(inputs=inputs, retain_graph=bool(p["r"]))


def requires_grad_(env, p):
    env.pick(p["i"]).requires_grad_(bool(p["two"]))


def detach(env, p):
    """(torch lets a detach() of an inference tensor, made outside inference_mode, be written in place,
    though it refuses writes into the tensor itself and into any other view of it: an accident that
    distgraph, which refuses them all, does not copy; writes into such a detach are left out.)"""
    i = p["i"] % len(env.ts)
    if env.ts[i].is_inference() and not env.lib.is_inference_mode_enabled() or i in env.odd:
        env.odd.add(len(env.ts))
    _share_version(env, i)
    env.ts.append(env.ts[i].detach())


def _share_version(env, i):
    """The tensor about to be appended shares tensor i's version counter: unversioned if i is (see snapshot)."""
    if i in env.unversioned:
        env.unversioned.add(len(env.ts))


def detach_(env, p):
    env.pick(p["i"]).detach_()


def retain_grad(env, p):
    env.pick(p["i"]).retain_grad()


def register_hook(env, p):
    """A hook that logs the gradient's sum (returns None), or one that returns a new gradient (grad * 2)."""
    label = p["i"] % len(env.ts)

    def hook(g):
        env.log.append(("hook", label, round(float(g.sum()), 9)))
        return g * 2 if p["two"] else None

    env.handles.append(env.ts[label].register_hook(hook))


def remove_handle(env, p):
    if env.handles:
        env.handles[p["i"] % len(env.handles)].remove()


def post_accumulate_hook(env, p):
    label = p["i"] % len(env.ts)

    def hook(t):
        env.log.append(("post", label, round(float(t.grad.sum()), 9)))

    env.handles.append(env.ts[label].register_post_accumulate_grad_hook(hook))


def _modes(lib, p):
    """1-3 nested grad-mode context managers drawn from p['modes'] (digits)."""
    menu = [
        lib.no_grad,
        lib.enable_grad,
        lambda: lib.set_grad_enabled(False),
        lambda: lib.set_grad_enabled(True),
        lib.inference_mode,
        lambda: lib.inference_mode(False),
    ]
    return [menu[int(d)] for d in p["modes"]]


def grad_mode(env, p):
    """An op (and a view) inside nested modes, entered as contexts or (p['two']) as decorators; returns
    what is_grad_enabled / is_inference_mode_enabled said inside and after."""
    lib = env.lib

    def body():
        a = BINARY[p["op"]](env.pick(p["i"]), env.pick(p["j"]))
        v = VIEWS[p["k"] % len(VIEWS)](env.pick(p["i"]))
        if p["i"] % len(env.ts) in env.unversioned:
            env.unversioned.add(len(env.ts) + 1)  # (v's index: see _share_version)
        env.ts += [a, v]
        return lib.is_grad_enabled(), lib.is_inference_mode_enabled()

    fn = body
    if p["two"]:
        for mode in reversed(_modes(lib, p)):
            fn = mode()(fn)
        inside = fn()
    else:
        with _Nest(_modes(lib, p)):
            inside = fn()
    return inside, lib.is_grad_enabled(), lib.is_inference_mode_enabled()


class _Nest:
    def __init__(self, makers):
        self.makers, self.entered = makers, []

    def __enter__(self):
        for m in self.makers:
            cm = m()
            cm.__enter__()
            self.entered.append(cm)

    def __exit__(self, *exc):
        for cm in reversed(self.entered):
            cm.__exit__(None, None, None)


def assign_grad(env, p):
    """.grad = right shape / wrong shape / float32 / None / a list (torch checks all but the first and None)."""
    t, lib = env.pick(p["i"]), env.lib
    values = [
        lambda: env.ones(t, 0.5),
        lambda: lib.ones(7, dtype=lib.float64),
        lambda: lib.ones(tuple(t.shape), dtype=lib.float32),
        lambda: None,
        lambda: [1.0] * t.numel(),
        lambda: lib.ones(tuple(t.shape), dtype=lib.int64),
    ]
    t.grad = values[p["k"] % len(values)]()


def inplace(env, p):
    """zero_ / add_ / mul_ / fill_ on a tensor, with grad mode on or under no_grad."""
    t, lib = env.pick(p["i"]), env.lib
    if p["i"] % len(env.ts) in env.odd:
        return "skipped"
    write = [lambda: t.zero_(), lambda: t.add_(1), lambda: t.mul_(2), lambda: t.fill_(0.5)][p["k"] % 4]
    if p["two"]:
        with lib.no_grad():
            write()
    else:
        write()


def saved_write(env, p):
    """Save a tensor for backward (t * t), then write into it: a later backward must refuse."""
    t = env.pick(p["i"])
    if p["i"] % len(env.ts) in env.odd:
        return "skipped"
    env.ts.append(t * t if p["two"] else t.exp())
    (t if p["two"] else env.ts[-1]).add_(1)


def data(env, p):
    """.data: read it (outside the graph), write through it (unversioned), or rebind it. (Not rebinding
    an inference tensor: torch's is_inference() then follows the new data while its version counter
    stays, so it says it is no inference tensor yet has no version; distgraph keeps both with it. Nor
    rebinding a view's, or a viewed tensor's: torch's view still is one, sharing no memory with its
    base (detach_ refuses it; a write through it is recorded as one into the base, which it does not
    change); distgraph's view is one while it shares the memory, so it is then a tensor of its own.)"""
    t, lib = env.pick(p["i"]), env.lib
    if p["i"] % len(env.ts) in env.odd:
        return "skipped"
    viewed = t._base is not None or any(u._base is t for u in env.ts)
    if p["k"] % 3 == 0 or t.is_inference() or (p["k"] % 3 == 2 and viewed):
        return t.data.requires_grad, t.data.is_leaf
    if p["k"] % 3 == 1:
        t.data.mul_(2)
    else:
        t.data = lib.full(tuple(t.shape), 0.25, dtype=lib.float64)


def grad_zero(env, p):
    t = env.pick(p["i"])
    if p["two"]:
        t.grad = None
    else:
        t.grad.zero_()


STEPS = [
    make, make, make, view, backward, backward, grad, grad, backward_inputs, requires_grad_, detach, detach_,
    retain_grad, register_hook, register_hook, remove_handle, post_accumulate_hook, grad_mode, grad_mode,
    assign_grad, inplace, saved_write, data, grad_zero,
]  # fmt: skip


def draw(rng):
    """One step: (function, parameters). 'last' picks a recent tensor more often than an old one."""
    fn = STEPS[int(rng.integers(len(STEPS)))]
    n_modes = int(rng.integers(1, 4))
    p = {k: int(rng.integers(5)) for k in ("op", "k")}
    p |= {k: int(rng.integers(100)) for k in ("i", "j")}
    p |= {k: int(rng.integers(3)) for k in ("r", "u")}
    p |= {k: int(rng.integers(2)) for k in ("two", "c", "m")}
    p["last"] = -1 - int(rng.integers(3)) if rng.random() < 0.7 else int(rng.integers(100))
    p["modes"] = "".join(str(int(rng.integers(6))) for _ in range(n_modes))
    return fn, p


# ---- what is compared ------------------------------------------------------------------------------
def _try(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any refusal; both libraries must refuse alike
        return Raised(exc)


def _value(x):
    """A step's result or an attribute, made comparable across the libraries."""
    if isinstance(x, dg.Tensor | torch.Tensor):
        return ("tensor", np.array(x.detach().tolist(), dtype=np.float64), x.requires_grad)
    if isinstance(x, tuple | list):
        return tuple(_value(v) for v in x)
    return x


def snapshot(env):
    """Every tensor's values and autograd flags, the .grads, the hook log. Not the version of what
    autograd.grad returned, nor of a detach or view of it (whether torch summed into it in place is its
    engine's business), nor of an
    inference tensor (it has none; torch says 0 for a detach of one, see detach)."""
    rows = []
    for i, t in enumerate(env.ts):
        versioned = i not in env.unversioned and not t.is_inference()
        rows.append(
            (
                _try(lambda: _value(t)),
                _try(lambda: t.is_leaf),
                _try(lambda: t.grad_fn is None),
                _try(lambda: t.retains_grad),
                t.is_inference(),
                _try(lambda: t._version) if versioned else None,
                _try(lambda: _value(t.grad)),
            )
        )
    return rows, sorted(env.log)


def same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape) and np.allclose(
            a, b, rtol=1e-9, atol=1e-12, equal_nan=True
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def run(seed):
    """Run seed's program on both libraries; None if they agree, else a description of the divergence."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(3) for _ in range(3)]
    envs = [Env(dg, arrays), Env(torch, arrays)]
    done = []
    for _ in range(N_STEPS):
        fn, p = draw(rng)
        done.append(f"{fn.__name__}({p})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = [_try(lambda env=env: _value(fn(env, p))) for env in envs]
            states = [snapshot(env) for env in envs]
        if isinstance(got[0], Raised) and "a second time" in got[0].text and not isinstance(got[1], Raised):
            STOPPED["FREED"] += 1  # torch's accident: distgraph agreed up to here
            return None
        if fn in (backward, backward_inputs) and all(isinstance(g, Raised) for g in got) and not same(*states):
            if same(*[[row[:-1] for row in rows] for rows, _ in states]):  # (a row's last item: .grad)
                STOPPED["PARTIAL"] += 1  # only .grad differs, after a backward both refused: see PARTIAL
                return None
        (rows_d, log_d), (rows_t, log_t) = states
        for what, d, t in (("result", *got), ("tensors", rows_d, rows_t), ("hooks", log_d, log_t)):
            if not same(d, t):
                return f"seed {seed}: {what} differ after\n  " + "\n  ".join(done) + f"\ndistgraph {d}\ntorch     {t}"
    return None


@pytest.mark.parametrize("seed", range(300))
def test_autograd_api_calls_match_torch(seed):
    problem = run(seed)
    assert problem is None, problem


if __name__ == "__main__":
    start, stop = (int(a) for a in sys.argv[1:3])
    bad = [p for p in map(run, range(start, stop)) if p]
    print(
        "\n\n".join(bad) or "no divergence",
        f"\n{len(bad)} of {stop - start} seeds diverge; stopped early: {dict(STOPPED)}",
    )
