"""What `test_optim_fuzz` draws: an optimizer with options both libraries accept, per-group overrides,
a learning-rate scheduler (or a chain of them), and bad options both must refuse.

Every drawer takes a numpy Generator and returns plain data (names, dicts, tuples), so one draw builds
the same object in distgraph and in torch: `build_scheduler(spec, lr_scheduler_module, optimizer)`.
"""

import math

# ---- optimizers: option name -> values to draw from (the first is torch's default) ------------------------------
_BETAS = [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.95, 0.5)]
_WD = [0.0, 0.05, 0.3]
OPTIONS = {
    "SGD": dict(momentum=[0.0, 0.5, 0.9], dampening=[0.0, 0.3], nesterov=[False, True], weight_decay=_WD,
                maximize=[False, True]),
    "Adam": dict(betas=_BETAS, eps=[1e-8, 1e-3], weight_decay=_WD, amsgrad=[False, True], maximize=[False, True],
                 decoupled_weight_decay=[False, True]),
    "AdamW": dict(betas=_BETAS, eps=[1e-8, 1e-3], weight_decay=[1e-2, 0.0, 0.3], amsgrad=[False, True],
                  maximize=[False, True]),
    "RMSprop": dict(alpha=[0.99, 0.5], eps=[1e-8, 1e-3], weight_decay=_WD, momentum=[0.0, 0.9],
                    centered=[False, True], maximize=[False, True]),
    "Adagrad": dict(lr_decay=[0.0, 0.1], weight_decay=_WD, initial_accumulator_value=[0.0, 0.5], eps=[1e-10, 1e-3],
                    maximize=[False, True]),
    "NAdam": dict(betas=_BETAS, eps=[1e-8, 1e-3], weight_decay=_WD, momentum_decay=[4e-3, 0.1],
                  decoupled_weight_decay=[False, True], maximize=[False, True]),
    "RAdam": dict(betas=_BETAS, eps=[1e-8, 1e-3], weight_decay=_WD, decoupled_weight_decay=[False, True],
                  maximize=[False, True]),
    "Adamax": dict(betas=_BETAS, eps=[1e-8, 1e-3], weight_decay=_WD, maximize=[False, True]),
    "Adadelta": dict(rho=[0.9, 0.5, 1.0], eps=[1e-6, 1e-3], weight_decay=_WD, maximize=[False, True]),
    "Rprop": dict(etas=[(0.5, 1.2), (0.3, 1.5)], step_sizes=[(1e-6, 50), (1e-3, 0.05)], maximize=[False, True]),
    "ASGD": dict(lambd=[1e-4, 0.1], alpha=[0.75, 0.5], t0=[1e6, 2.0, 3], weight_decay=_WD, maximize=[False, True]),
}  # fmt: skip
# torch's implementation options, values both libraries accept: foreach and fused (the classes that take it)
# with None, False or True but never both True; capturable and differentiable at their default only — torch's
# CPU step refuses capturable=True, distgraph refuses differentiable=True — and ASGD's foreach never True:
# torch's foreach ASGD rounds eta otherwise than its single-tensor one (test_optim_options.py covers these)
_FUSED = ("SGD", "Adam", "AdamW", "Adagrad")
_CAPTURABLE = ("Adam", "AdamW", "RMSprop", "NAdam", "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD")
for _name, _opts in OPTIONS.items():
    _opts.update(foreach=[None, False] if _name == "ASGD" else [None, False, True], differentiable=[False])
    if _name in _FUSED:
        _opts["fused"] = [None, False, True]
    if _name in _CAPTURABLE:
        _opts["capturable"] = [False]
LRS = {"Adadelta": [1.0, 0.5], "Rprop": [0.01, 0.1]}  # lrs on the scale of each optimizer's default
_LR = [1e-3, 0.01, 0.1, 0.0]

# Bad values torch's constructor refuses, per option: (option, value); "nesterov" also sets momentum 0.
BAD = {
    "SGD": [("momentum", -0.5), ("weight_decay", -0.1), ("nesterov", True)],
    "Adam": [("betas", (1.0, 0.999)), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.9)), ("eps", -1e-8),
             ("weight_decay", -0.1)],
    "RMSprop": [("alpha", -0.1), ("eps", -1e-3), ("momentum", -0.1), ("weight_decay", -1.0)],
    "Adagrad": [("lr_decay", -0.1), ("weight_decay", -0.1), ("initial_accumulator_value", -1.0), ("eps", -1.0)],
    "NAdam": [("betas", (0.9, 1.5)), ("eps", -1.0), ("weight_decay", -0.1), ("momentum_decay", -0.1)],
    "Adadelta": [("rho", 1.5), ("rho", -0.1), ("eps", -1.0), ("weight_decay", -0.1)],
    "Rprop": [("etas", (1.2, 0.5)), ("etas", (0.5, 1.0)), ("etas", (0.0, 1.2))],
    "ASGD": [("weight_decay", -0.1)],
}  # fmt: skip
BAD["AdamW"] = BAD["RAdam"] = BAD["Adamax"] = BAD["Adam"]
# The pairings torch refuses with fused=True: (the option named, the options set, the parameter's dtype);
# torch refuses the first two in the constructor, a non-floating parameter at its first step.
BAD_FUSED = [
    ("foreach", dict(fused=True, foreach=True), "float64"),
    ("differentiable", dict(fused=True, differentiable=True), "float64"),
    ("fused", dict(fused=True), "int64"),
]


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def draw_options(rng, name, p_each=0.6):
    """A valid option dict for optimizer `name`: each option drawn with probability `p_each`."""
    opts = {k: _pick(rng, v) for k, v in OPTIONS[name].items() if rng.random() < p_each}
    if rng.random() < 0.8:
        opts["lr"] = _pick(rng, LRS.get(name, _LR))
    return fix_fused(name, fix_nesterov(name, opts))


def fix_fused(name, opts, defaults=None):
    """fused=True refuses foreach=True (torch in its constructor, distgraph in every group): where the group's
    merged options have both, foreach goes back to None. torch's fused SGD with momentum fails on a parameter
    whose first gradient comes after another's (test_optim_options.py): there fused goes back to None."""
    merged = {**(defaults or {}), **opts}
    if merged.get("fused") and merged.get("foreach"):
        opts["foreach"] = None
    if name == "SGD" and merged.get("fused") and merged.get("momentum"):
        opts["fused"] = None
    return opts


def fix_nesterov(name, opts):
    """SGD's nesterov needs momentum > 0 and no dampening: drop it where the draw has neither."""
    if name == "SGD" and opts.get("nesterov") and (opts.get("momentum", 0) <= 0 or opts.get("dampening", 0) != 0):
        opts["nesterov"] = False
    return opts


def draw_group_overrides(rng, name, defaults):
    """Per-group options: a fresh draw of some options; SGD's three momentum options move together so the
    group's merged values stay valid (torch checks only the constructor's defaults, distgraph every group)."""
    opts = draw_options(rng, name, p_each=0.3)
    if name == "SGD" and ({"momentum", "dampening", "nesterov"} & opts.keys()):
        merged = {**defaults, **opts}
        opts.update(fix_nesterov(name, {k: merged.get(k, 0) for k in ("momentum", "dampening", "nesterov")}))
    return fix_fused(name, opts, defaults)


def draw_bad(rng, name):
    """(options, the bad option's name, the parameter's dtype): valid options with one value or pairing
    torch refuses (in the constructor, or at the first step for fused=True on a non-floating parameter)."""
    bad = [(k, {k: v}, "float64") for k, v in BAD[name] + [("lr", -0.01)]]
    key, changes, dtype = _pick(rng, bad + (BAD_FUSED if name in _FUSED else []))
    opts = draw_options(rng, name)
    opts.update(changes)
    if key == "nesterov":
        opts["momentum"] = _pick(rng, [0.0, 0.9])
        opts["dampening"] = 0.5 if opts["momentum"] else _pick(rng, [0.0, 0.5])
    return opts, key, dtype


# ---- schedulers: a spec is (class name, kwargs) or (wrapper name, [specs], kwargs) --------------------------------
def _lambda_fn(kind):
    """Schedules for LambdaLR / MultiplicativeLR, named by data so both libraries get the same function."""
    return {
        "exp": lambda e: 0.9**e,
        "inv": lambda e: 1.0 / (1.0 + 0.3 * e),
        "step": lambda e: 0.5 if e % 3 == 2 else 1.0,
        "cos": lambda e: 0.5 * (1 + math.cos(e)),
    }[kind]


def draw_scheduler(rng, n_steps, optimizer_name, depth=0):
    """A scheduler spec; wrappers (SequentialLR, ChainedScheduler) only at the top."""
    names = ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
             "OneCycleLR", "CyclicLR", "LambdaLR", "MultiplicativeLR", "LinearLR", "ConstantLR", "PolynomialLR"]  # fmt: skip
    if depth == 0:
        names += ["SequentialLR", "ChainedScheduler", "ReduceLROnPlateau"]
    name = _pick(rng, names)
    i = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    momentum = optimizer_name in ("SGD", "RMSprop") or "betas" in OPTIONS[optimizer_name]
    kw = {
        "StepLR": lambda: dict(step_size=i(1, 4), gamma=_pick(rng, [0.1, 0.5, 0.9])),
        "MultiStepLR": lambda: dict(milestones=sorted(int(m) for m in rng.integers(1, n_steps, i(1, 4))),
                                    gamma=_pick(rng, [0.1, 0.5])),
        "ExponentialLR": lambda: dict(gamma=_pick(rng, [0.9, 0.5, 1.1])),
        "CosineAnnealingLR": lambda: dict(T_max=i(1, n_steps), eta_min=_pick(rng, [0.0, 1e-4])),
        "CosineAnnealingWarmRestarts": lambda: dict(T_0=i(1, 5), T_mult=i(1, 3), eta_min=_pick(rng, [0.0, 1e-4])),
        "OneCycleLR": lambda: dict(max_lr=_pick(rng, [0.1, 0.01]), total_steps=n_steps + i(1, 4),
                                   pct_start=_pick(rng, [0.3, 0.5, 0.0]), anneal_strategy=_pick(rng, ["cos", "linear"]),
                                   three_phase=bool(rng.integers(2)), cycle_momentum=momentum and rng.random() < 0.7,
                                   div_factor=_pick(rng, [25.0, 5.0])),
        "CyclicLR": lambda: dict(base_lr=_pick(rng, [1e-3, 0.01]), max_lr=_pick(rng, [0.1, 0.05]),
                                 step_size_up=i(1, 4), step_size_down=_pick(rng, [None, 1, 2]),
                                 mode=_pick(rng, ["triangular", "triangular2", "exp_range"]),
                                 gamma=_pick(rng, [1.0, 0.9]), cycle_momentum=momentum and rng.random() < 0.7),
        "LambdaLR": lambda: dict(lr_lambda=_pick(rng, ["exp", "inv", "step", "cos"])),
        "MultiplicativeLR": lambda: dict(lr_lambda=_pick(rng, ["exp", "inv", "step"])),
        "LinearLR": lambda: dict(start_factor=_pick(rng, [1 / 3, 0.5, 1.0]), end_factor=_pick(rng, [1.0, 0.5, 0.0]),
                                 total_iters=i(1, 6)),
        "ConstantLR": lambda: dict(factor=_pick(rng, [1 / 3, 0.5, 1.0]), total_iters=i(1, 6)),
        "PolynomialLR": lambda: dict(total_iters=i(1, 8), power=_pick(rng, [1.0, 2.0, 0.5])),
        "ReduceLROnPlateau": lambda: dict(mode=_pick(rng, ["min", "max"]), factor=_pick(rng, [0.1, 0.5]),
                                          patience=i(0, 3), threshold=_pick(rng, [1e-4, 0.1]),
                                          threshold_mode=_pick(rng, ["rel", "abs"]), cooldown=i(0, 2),
                                          min_lr=_pick(rng, [0.0, 1e-3]), eps=_pick(rng, [1e-8, 1e-2])),
    }  # fmt: skip
    if name == "SequentialLR":
        subs = [draw_scheduler(rng, n_steps, optimizer_name, 1) for _ in range(i(2, 4))]
        subs = [s for s in subs if s[0] != "OneCycleLR"] or [("StepLR", kw["StepLR"]())]
        milestones = sorted({int(m) for m in rng.integers(1, n_steps, len(subs) - 1)})
        return (name, subs[: len(milestones) + 1], dict(milestones=milestones))
    if name == "ChainedScheduler":
        subs = [draw_scheduler(rng, n_steps, optimizer_name, 1) for _ in range(i(2, 4))]
        return (name, [s for s in subs if s[0] not in ("OneCycleLR", "CyclicLR")] or subs[:1], {})
    return (name, kw[name]())


# Scheduler options torch refuses (at construction or on the first steps): (scheduler, kwargs, option)
BAD_SCHEDULERS = [
    ("ConstantLR", dict(factor=1.5), "factor"),
    ("LinearLR", dict(start_factor=0.0), "start_factor"),
    ("LinearLR", dict(end_factor=1.5), "end_factor"),
    ("ReduceLROnPlateau", dict(factor=1.0), "factor"),
    ("ReduceLROnPlateau", dict(mode="avg"), "mode"),
    ("ReduceLROnPlateau", dict(threshold_mode="pct"), "threshold_mode"),
    ("CosineAnnealingWarmRestarts", dict(T_0=0), "T_0"),
    ("CosineAnnealingWarmRestarts", dict(T_0=2, T_mult=0), "T_mult"),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=0), "total_steps"),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=5, pct_start=1.5), "pct_start"),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=5, anneal_strategy="exp"), "anneal_strategy"),
    ("OneCycleLR", dict(max_lr=0.1, total_steps=2), "total_steps"),  # stepped past its total
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, mode="square", cycle_momentum=False), "mode"),
    ("LambdaLR", dict(lr_lambda=["exp"] * 5), "lr_lambda"),  # one function per group: too many
]


def build_scheduler(spec, lrs, optimizer):
    """The scheduler `spec` describes, from module `lrs` (distgraph's or torch's lr_scheduler)."""
    name = spec[0]
    if name in ("SequentialLR", "ChainedScheduler"):
        subs = [build_scheduler(s, lrs, optimizer) for s in spec[1]]
        if name == "ChainedScheduler":
            return lrs.ChainedScheduler(subs, optimizer)
        return lrs.SequentialLR(optimizer, subs, **spec[2])
    kw = dict(spec[1])
    if "lr_lambda" in kw:
        fn = kw["lr_lambda"]
        kw["lr_lambda"] = [_lambda_fn(f) for f in fn] if isinstance(fn, list) else _lambda_fn(fn)
    return getattr(lrs, name)(optimizer, **kw)
