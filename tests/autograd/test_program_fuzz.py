"""Random eager programs, distgraph against torch: values, dtypes, errors, gradients and second-order gradients.

Each seed draws a program from the menu in `program_menu` (elementwise ops with broadcasting and dtype
promotion over float64/float32/int64/bool tensors and Python scalars, where/clamp/lerp, reductions,
matmuls, shape and indexing ops, sort/topk, and in-place writes through views of intermediates) and
runs it step by step on distgraph and on torch. After every step both must agree: either both raise
(any exception type) or both give the same values, dtypes, shapes and requires_grad. Then the
gradient of a random weighted sum of every value that requires grad is taken w.r.t. every float leaf
— by distgraph's fast array rules (create_graph=False) and by its differentiable rules
(create_graph=True) — and must equal torch's, or both must raise (torch's version-counter errors).
For some seeds the second-order gradient (grad of grad·v) is compared too. About one step in seven is
drawn from `program_menu_extra` (activations, losses, padding, unfold, stacking, more in-place writes)
with its own random stream, so a program's steps from MENU stay what they were up to the first such step.

`python tests/autograd/test_program_fuzz.py START STOP` runs many more seeds and prints every divergence.
"""

import contextlib
import sys
import warnings

import numpy as np
import pytest

import distgraph as dg
from tests.autograd.program_menu import MENU
from tests.autograd.program_menu_extra import EXTRA_MENU, EXTRA_RATE

torch = pytest.importorskip("torch")

N_STEPS = 12


def _leaves(rng):
    """The program's inputs: float64 leaves of assorted shapes that require grad, a float32 leaf that
    requires grad, and int64, bool and float32 tensors that do not."""
    shapes = [(3, 4), (4,), (3, 1), (1, 4), (2, 3, 4), (), (4, 4)]
    specs = [((3, 4), "f8", True), (shapes[int(rng.integers(len(shapes)))], "f8", True)]
    specs += [(shapes[int(rng.integers(len(shapes)))], "f8", True), ((3, 4), "f4", bool(rng.integers(2)))]
    specs += [((3, 4), "i8", False), ((3, 4), "b", False)]
    out = []
    for shape, kind, grad in specs:
        if kind == "i8":
            a = rng.integers(-3, 4, shape)
        elif kind == "b":
            a = rng.random(shape) < 0.5
        else:
            a = rng.standard_normal(shape).astype(kind)
        out.append((dg.tensor(a.copy(), requires_grad=grad), torch.tensor(a.copy(), requires_grad=grad)))
    return out


# Calls torch refuses and distgraph accepts, left as they are (listed in the fuzzer's report): mixed
# float dtypes in matmul-like ops and lerp/isclose; Python numbers where torch's signature wants a
# Tensor; outer of non-1-D; float-only math on integer tensors; scatter's dtype and
# index-size checks; expand()/permute() without sizes.
_LENIENT_OPS = (
    "lerp", "isclose", "outer", "@T", "mm", "mv", "bmm", "einsum", "matmul", "maximum", "minimum", "atan2",
    "logical_", "fmod", "ge(", "gt(", "clamp(", "sub(", "-(", "scatter", "norm(", "expand_m1", "permute",
    "diag(", "softmax", "log_softmax", "log2", "log10", "frac", "pow_frac", "addmm",
    "inner", "addmv", "addr", "baddbmm", "addbmm", "cross", "linalg_cross",  # program_menu_new's
)  # fmt: skip
_LENIENT_ERRORS = ("must be Tensor", "expected", "Expected", "not implemented for", "is not supported",
                   "does not allow", "invalid combination", "missing 1 required",
                   "view of a leaf Variable", "did not match", "found", "must have the same dtype",
                   "should have same dtype")  # fmt: skip


def _lenient(desc, t_err):
    msg = str(t_err)
    if "for 'Bool'" in msg or "support bool input" in msg:  # float math on bool tensors
        return True
    desc = desc.removeprefix("m.")  # m.frac(...) as frac(...)
    return desc.startswith(_LENIENT_OPS) and any(e in msg for e in _LENIENT_ERRORS)


def _as_list(x):
    return list(x) if isinstance(x, tuple | list) else [x]


def _snapshots():
    """torch with every saved tensor copied when saved: where torch refuses a backward because a saved
    tensor was later written in place, this gives the gradient of the values as they were computed."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def _attempt(fn, m, args, snapshots=False):
    try:
        with warnings.catch_warnings(), _snapshots() if snapshots else contextlib.nullcontext():
            warnings.simplefilter("ignore")
            return fn(m, *args), None
    except Exception as exc:  # noqa: BLE001 - any exception counts as "raised"; the message is reported
        return None, exc


def _tol(dtype_name):
    return (1e-4, 1e-5) if dtype_name in ("float32", "float16") else (1e-9, 1e-9)


def _compare(d, t, what, loose=False):
    """A description of how distgraph value `d` differs from torch value `t`, or None. `loose`: the
    value was computed from float32 values, whose last bits differ between numpy's and torch's kernels."""
    if isinstance(t, torch.Tensor) != isinstance(d, dg.Tensor):
        return f"{what}: distgraph gave {type(d).__name__}, torch {type(t).__name__}"
    if not isinstance(t, torch.Tensor):
        return None if d == t else f"{what}: {d!r} != torch {t!r}"
    t_name = str(t.dtype).split(".")[-1]
    if d.dtype.name != t_name:
        return f"{what}: dtype {d.dtype.name} != torch {t_name}"
    if tuple(d.shape) != tuple(t.shape):
        return f"{what}: shape {tuple(d.shape)} != torch {tuple(t.shape)}"
    if d.requires_grad != t.requires_grad and t.dtype.is_floating_point:  # torch lets an int/bool tensor
        # written with a grad-requiring value through index_put report requires_grad; it cannot have a grad
        return f"{what}: requires_grad {d.requires_grad} != torch {t.requires_grad}"
    got, want = np.asarray(d.detach().array), t.detach().numpy()
    rtol, atol = _tol("float32" if loose else t_name)
    if got.dtype.kind == "f":
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return f"{what}: values differ\n{got}\ntorch:\n{want}"
    elif not np.array_equal(got, want):
        return f"{what}: values differ\n{got}\ntorch:\n{want}"
    return None


def _grads(m, loss, leaves, create_graph):
    return m.autograd.grad(loss, leaves, retain_graph=True, create_graph=create_graph, allow_unused=True)


def _compare_grads(dgs, ths, leaves, what, loose):
    """Gradients that flowed through float32 values are compared at float32's tolerance."""
    for k, (d, t, leaf) in enumerate(zip(dgs, ths, leaves)):
        zero = np.zeros(tuple(leaf.shape))
        got = zero if d is None else np.asarray(d.detach().array)
        want = zero if t is None else t.detach().numpy(force=True)  # a ZeroTensor too
        rtol, atol = _tol("float32" if loose else str(leaf.dtype).split(".")[-1])
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return f"{what} of leaf {k}: \n{got}\ntorch:\n{want}"
    return None


def _weighted_sum(m, values, weights):
    total = None
    for v, w in zip(values, weights):
        term = (v * m.tensor(w)).sum()
        total = term if total is None else total + term
    return total


def run_program(seed, n_steps=N_STEPS, second_order=False, snapshots=False, more=None):
    """Run one random program on both libraries; return (trace, divergence or None). `more`: (menu,
    rate), a further menu drawn from with its own stream (test_program_fuzz_new_ops.py).

    Where torch's backward refuses a saved tensor written in place and distgraph's does not, the program
    runs again with torch saving copies (`snapshots`): distgraph must then give those gradients."""
    rng = np.random.default_rng(seed)
    pool = _leaves(rng)
    loose = [t.dtype == torch.float32 for _, t in pool]  # computed from float32 values
    leaves = [k for k, (_, t) in enumerate(pool) if t.requires_grad]
    gens, weights = zip(*MENU)
    p = np.array(weights, float) / sum(weights)
    extra_gens, extra_weights = zip(*EXTRA_MENU)
    extra_p = np.array(extra_weights, float) / sum(extra_weights)
    xrng = np.random.default_rng([seed, 1])  # the extra menu's own stream: the steps drawn from MENU
    trace = []  # stay what they were, up to the first extra step (a program with none is unchanged)
    mrng = np.random.default_rng([seed, 2])
    for step in range(n_steps):
        if more is not None and mrng.random() < more[1]:
            gens_m, weights_m = zip(*more[0])
            gen = gens_m[int(mrng.choice(len(gens_m), p=np.array(weights_m, float) / sum(weights_m)))]
            desc, fn, idx = gen(mrng, pool)
        elif xrng.random() < EXTRA_RATE:
            gen = extra_gens[int(xrng.choice(len(extra_gens), p=extra_p))]
            desc, fn, idx = gen(xrng, pool)
        else:
            gen = gens[int(rng.choice(len(gens), p=p))]
            desc, fn, idx = gen(rng, pool)
        trace.append(desc)
        d_out, d_err = _attempt(fn, dg, [pool[i][0] for i in idx])
        t_out, t_err = _attempt(fn, torch, [pool[i][1] for i in idx], snapshots)
        if d_err is None and t_err is not None and _lenient(desc, t_err):
            trace[-1] += " (torch refuses, distgraph accepts: known)"
            if gen.__name__.startswith("inplace"):  # distgraph wrote, torch did not: the values part here
                return trace, None
            continue
        if d_err is not None or t_err is not None:
            if (d_err is None) != (t_err is None):
                return trace, f"step {step} {desc}: distgraph raised {d_err!r}, torch raised {t_err!r}"
            trace[-1] += " (both raise)"
            continue
        tainted = any(loose[i] for i in idx)
        d_out, t_out = _as_list(d_out), _as_list(t_out)
        if len(d_out) != len(t_out):
            return trace, f"step {step} {desc}: {len(d_out)} outputs != torch {len(t_out)}"
        for k, (d, t) in enumerate(zip(d_out, t_out)):
            tainted_k = tainted or (isinstance(t, torch.Tensor) and t.dtype == torch.float32)
            bad = _compare(d, t, f"step {step} {desc} output {k}", tainted_k)
            if bad:
                return trace, bad
            if isinstance(t, torch.Tensor):
                pool.append((d, t))
                loose.append(tainted_k)
        if gen.__name__.startswith("inplace"):
            if tainted:  # the write may have reached any alias
                loose = [True] * len(pool)
        for k, (d, t) in enumerate(pool):  # an in-place write reaches every alias
            bad = _compare(d, t, f"after step {step} {desc}: pool value {k}", loose[k])
            if bad:
                return trace, bad
    bad = _check_gradients(rng, pool, leaves, second_order, loose, snapshots)
    if bad == "retry with snapshots":
        return run_program(seed, n_steps, second_order, snapshots=True, more=more)
    return trace, bad


def _check_gradients(rng, pool, leaves, second_order, loose, snapshots):
    live = [k for k, (_, t) in enumerate(pool) if t.requires_grad and t.dtype.is_floating_point]
    loose = any(loose[k] for k in live)
    live = [pool[k] for k in live]
    weights = [rng.standard_normal(tuple(t.shape)) for _, t in live]
    d_leaves, t_leaves = [pool[k][0] for k in leaves], [pool[k][1] for k in leaves]
    d_loss, d_err = _attempt(lambda m, *vs: _weighted_sum(m, vs, weights), dg, [d for d, _ in live])
    t_loss, t_err = _attempt(lambda m, *vs: _weighted_sum(m, vs, weights), torch, [t for _, t in live], snapshots)
    if (d_err is None) != (t_err is None):
        return f"loss: distgraph raised {d_err!r}, torch raised {t_err!r}"
    if t_loss is None or not t_loss.requires_grad:
        return None
    t_g, t_err = _attempt(lambda m, loss: _grads(m, loss, t_leaves, second_order), torch, [t_loss], snapshots)
    if t_err is not None and "INTERNAL ASSERT" in str(t_err):
        return None  # torch's own bug
    if t_err is not None and "doesn't match the broadcast shape" in str(t_err):
        return None  # torch's own bug: clamp(a, min=t, max=u) where a broadcasts cannot backward
    if t_err is not None and "derivative for" in str(t_err) and "not implemented" in str(t_err):
        return None  # floor_divide, remainder(number, t): distgraph gives their (zero / -floor) gradient
    if t_err is not None and "returned an invalid gradient at index" in str(t_err):
        return None  # torch's own bug: Scatter(Add)Backward0 with a src smaller than index refuses its gradient
    if t_err is not None and "Found dtype" in str(t_err) and "but expected" in str(t_err):
        return None  # torch's own bug: huber_loss of mixed float dtypes cannot backward
    if t_err is not None and "addmv input tensors must have the same dtype" in str(t_err):
        return None  # torch's own bug: addr takes mixed float dtypes, its backward (an addmv) refuses them
    if t_err is not None and "can't be cast to the desired output type" in str(t_err):
        return None  # torch's own bug: addcdiv's backward divides into its bool or int64 tensor2, accepted forward
    if t_err is not None and "operator, " in str(t_err) and "bool tensor" in str(t_err):
        return None  # torch's own bug: a backward formula negates or subtracts a bool operand it accepted
    if t_err is not None and "modified by an inplace operation" in str(t_err) and not snapshots:
        d_g, d_err = _attempt(lambda m, loss: _grads(m, loss, d_leaves, False), dg, [d_loss])
        if d_err is None:
            return "retry with snapshots"
    for create_graph in (False, True):
        d_g, d_err = _attempt(lambda m, loss: _grads(m, loss, d_leaves, create_graph), dg, [d_loss])
        what = f"gradient (create_graph={create_graph})"
        if (d_err is None) != (t_err is None):
            return f"{what}: distgraph raised {d_err!r}, torch raised {t_err!r}"
        if t_err is None and (bad := _compare_grads(d_g, t_g, t_leaves, what, loose)):
            return bad
    if not second_order or t_err is not None:
        return None
    vs = [rng.standard_normal(tuple(t.shape)) for t in t_leaves]
    picked = [k for k, g in enumerate(t_g) if g is not None and g.requires_grad]
    if not picked:
        return None
    t_s = _weighted_sum(torch, [t_g[k] for k in picked], [vs[k] for k in picked])
    d_s = _weighted_sum(dg, [d_g[k] for k in picked], [vs[k] for k in picked])
    t_gg, t_err = _attempt(lambda m, s: _grads(m, s, t_leaves, False), torch, [t_s], snapshots)
    d_gg, d_err = _attempt(lambda m, s: _grads(m, s, d_leaves, False), dg, [d_s])
    if t_err is not None and "derivative for" in str(t_err) and "not implemented" in str(t_err):
        return None  # torch has no double backward there (hardsigmoid): distgraph's is checked elsewhere
    if (d_err is None) != (t_err is None):
        return f"second order: distgraph raised {d_err!r}, torch raised {t_err!r}"
    return None if t_err is not None else _compare_grads(d_gg, t_gg, t_leaves, "second-order gradient", loose)


# Divergences found and not yet fixed (see the fuzzer's report); strict, so a fix shows up here.
OPEN = {}

# Hunting-mode seeds that diverge for reasons outside distgraph: printed as known, not counted.
KNOWN = {
    1545: "torch's hardshrink/softshrink disagree with themselves at NaN",
    6310: "ties among ±inf in topk: torch leaves their order unspecified",
    6528: "kl_div(x, x) as xlogy(t, t) - t·x: torch's xlogy takes glibc's log, an ulp off numpy's (and torch.log's) "
    "for one t, so its sum is 0 where distgraph's is 2e-18, and atan2 of it π off",
    7008: "float32 noise: numpy's float32 exp(1) is an ulp off torch's (2.718282, 2.7182817) and a float32 sum "
    "rounds apart; the second-order gradient through x / x's gradient (of values near 1 / x) shows those last bits",
    7033: "as 6528: kl_div(x, x) 2e-18 where torch's is 0 (glibc's log in torch's xlogy), then compared with lt",
    8188: "ties among ±inf in kthvalue (x / 0 truncated): torch leaves which index it returns unspecified",
    8379: "torch reports requires_grad on an int64 tensor a grad value was written into, then refuses log1p of it",
    9520: "as 8379: torch reports requires_grad on a bool tensor a grad value was written into (setitem through a "
    "detach()), then refuses pow(-3, it) ('Autograd not support dtype: Long')",
    9141: "x[::2].mul_(x[0]): the operand is a row of the written view, which torch's overlap check cannot tell "
    "(a strided view: 'too hard', not refused), so its kernel reads row 0 after writing it; distgraph reads the "
    "values from before the write",
}


@pytest.mark.parametrize(
    "seed",
    [pytest.param(s, marks=pytest.mark.xfail(reason=OPEN[s], strict=True)) if s in OPEN else s for s in range(150)],
)
def test_random_program_matches_torch(seed):
    trace, bad = run_program(seed, second_order=seed % 3 == 0)
    assert bad is None, f"seed {seed}\n" + "\n".join(trace) + f"\n-> {bad}"


if __name__ == "__main__":  # hunting mode: many seeds, every divergence printed
    start, stop = int(sys.argv[1]), int(sys.argv[2])
    failures = known = 0
    for seed in range(start, stop):
        trace, bad = run_program(seed, second_order=seed % 3 == 0)
        if bad and seed in KNOWN:
            known += 1
            print(f"=== seed {seed}: known, {KNOWN[seed]}\n")
        elif bad:
            failures += 1
            print(f"=== seed {seed}\n  " + "\n  ".join(trace) + f"\n  -> {bad}\n")
    print(f"{failures} of {stop - start} seeds diverge ({known} more known)")
