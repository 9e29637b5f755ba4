"""More ops for the random-program fuzzer, drawn from their own random stream (test_program_fuzz.py):
nn.functional activations and losses, stacking, padding, sliding-window views, addmm, like-constructors,
searchsorted/bincount, index_put, and in-place writes program_menu lacks, through views of
intermediates. Written as program_menu's entries are: `draw(rng, pool) -> (description, fn, operands)`
with fn(m, *tensors) run on distgraph and torch alike.
"""

from tests.autograd.program_menu import _VIEWS, _dim, _pick


def activation(rng, pool):
    i = _pick(rng, pool, "f")  # torch's activations refuse integer tensors that some of distgraph's take
    d = _dim(rng, pool[i][0], allow_none=False)
    fns = {
        "gelu": lambda F, a: F.gelu(a),
        "gelu_tanh": lambda F, a: F.gelu(a, approximate="tanh"),
        "silu": lambda F, a: F.silu(a),
        "softplus": lambda F, a: F.softplus(a, beta=2.0, threshold=1.0),
        "elu": lambda F, a: F.elu(a, alpha=0.7),
        "celu": lambda F, a: F.celu(a, alpha=2.0),  # torch rounds 1/alpha in its backward: a power of 2 is exact
        "selu": lambda F, a: F.selu(a),
        "leaky_relu": lambda F, a: F.leaky_relu(a, 0.1),
        "hardtanh": lambda F, a: F.hardtanh(a, -0.5, 0.8),
        "relu6": lambda F, a: F.relu6(a * 4),
        "logsigmoid": lambda F, a: F.logsigmoid(a),
        "mish": lambda F, a: F.mish(a),
        "hardswish": lambda F, a: F.hardswish(a * 3),
        "hardsigmoid": lambda F, a: F.hardsigmoid(a * 3),
        "softsign": lambda F, a: F.softsign(a),
        "tanhshrink": lambda F, a: F.tanhshrink(a),
        "softshrink": lambda F, a: F.softshrink(a, 0.5),
        "hardshrink": lambda F, a: F.hardshrink(a, 0.5),
        "threshold": lambda F, a: F.threshold(a, 0.1, -1.0),
        "glu": lambda F, a: F.glu(a, d),
        "normalize": lambda F, a: F.normalize(a, dim=d),
        "softmin": lambda F, a: F.softmin(a, d),
    }
    name = str(rng.choice(list(fns)))
    return f"F.{name}({i}, d={d})", lambda m, a: fns[name](m.nn.functional, a), [i]


def loss(rng, pool):
    a, b = _pick(rng, pool, "f"), _pick(rng, pool, "f")
    red = str(rng.choice(["mean", "sum", "none"]))
    fns = {
        "mse": lambda F, x, y: F.mse_loss(x, y, reduction=red),
        "l1": lambda F, x, y: F.l1_loss(x, y, reduction=red),
        "smooth_l1": lambda F, x, y: F.smooth_l1_loss(x, y, reduction=red, beta=0.5),
        "huber": lambda F, x, y: F.huber_loss(x, y, reduction=red, delta=0.7),
        "bce_logits": lambda F, x, y: F.binary_cross_entropy_with_logits(x, y.sigmoid(), reduction=red),
        "kl_div": lambda F, x, y: F.kl_div(x.log_softmax(-1), y.softmax(-1), reduction=red),
        "cosine_similarity": lambda F, x, y: F.cosine_similarity(x, y, dim=-1),
    }
    name = str(rng.choice(list(fns)))
    return f"F.{name}({a}, {b}, {red})", lambda m, x, y: fns[name](m.nn.functional, x, y), [a, b]


def shape_extra(rng, pool):
    i = _pick(rng, pool, "f" if rng.random() < 0.8 else "any")
    j = _pick(rng, pool, "f" if rng.random() < 0.8 else "any")
    t = pool[i][0]
    d = _dim(rng, t, allow_none=False)
    fns = {
        # overlapping windows go to the pool as a copy: torch's in-place ops through them depend on its loop order
        "unfold": lambda m, a, b: a.unfold(d, 2, 1) * 1,
        "unfold_step": lambda m, a, b: a.unfold(d, 1, 2),
        "swapaxes": lambda m, a, b: a.swapaxes(0, d),
        "expand_as": lambda m, a, b: a.expand_as(b),
        "view_as": lambda m, a, b: a.view_as(b),
        "reshape_as": lambda m, a, b: a.reshape_as(b),
        "broadcast_to": lambda m, a, b: a.broadcast_to(b.shape),
        "type_as": lambda m, a, b: a.type_as(b),
        "hstack": lambda m, a, b: m.hstack([a, b]),
        "vstack": lambda m, a, b: m.vstack([a, b]),
        "fliplr": lambda m, a, b: m.fliplr(a),
        "flipud": lambda m, a, b: m.flipud(a),
        "diag": lambda m, a, b: m.diag(a, 1),
        "pad": lambda m, a, b: m.nn.functional.pad(a, (1, 2)),
        "pad_value": lambda m, a, b: m.nn.functional.pad(a, (0, 1, 1, 0), value=-1.5),
        "pad_reflect": lambda m, a, b: m.nn.functional.pad(a, (1, 1), mode="reflect"),
        "pad_replicate": lambda m, a, b: m.nn.functional.pad(a, (2, 1), mode="replicate"),
        "addmm": lambda m, a, b: m.addmm(a, b, b.transpose(-1, -2), beta=0.5, alpha=2),
        "isinf": lambda m, a, b: (a / b).isinf(),
        "isfinite": lambda m, a, b: (a / b).isfinite(),
        "zeros_like": lambda m, a, b: m.zeros_like(a) + b,
        "full_like": lambda m, a, b: m.full_like(a, 2.5) * b,
        "new_full": lambda m, a, b: a.new_full((2, 1), 3) + b,
        "new_tensor": lambda m, a, b: a.new_tensor([1, 2, 3, 4]) * b,
        "searchsorted": lambda m, a, b: m.searchsorted(a.flatten().sort()[0], b),
        "bincount": lambda m, a, b: m.bincount(a.flatten().long().abs()),
        "argwhere": lambda m, a, b: m.argwhere(a),
        "index_put": lambda m, a, b: a.index_put((m.tensor([0, -1, 0]),), b.sum(), accumulate=True),
        "index_put_v": lambda m, a, b: a.index_put((m.tensor([1, 0]),), b[: a.shape[-1]]),
        "where_scalar": lambda m, a, b: m.where(a > 0, a, 2),
        "clip": lambda m, a, b: m.clip(a, max=b),
    }
    name = str(rng.choice(list(fns)))
    return f"{name}({i}, {j}, d={d})", fns[name], [i, j]


_INPLACE = {
    "lerp_": lambda m, v, o: v.lerp_(o.to(v.dtype), 0.3),  # torch refuses mixed dtypes (known lenient)
    "floor_divide_": lambda m, v, o: v.floor_divide_(o),
    "remainder_": lambda m, v, o: v.remainder_(o.abs() + 0.5),
    "fmod_": lambda m, v, o: v.fmod_(1.5),
    "square_": lambda m, v, o: v.square_(),
    "round_": lambda m, v, o: v.round_(),
    "erf_": lambda m, v, o: v.erf_(),
    "sign_": lambda m, v, o: v.sign_(),
    "abs_": lambda m, v, o: v.abs_(),
    "sin_": lambda m, v, o: v.sin_(),
    "atan_": lambda m, v, o: v.atan_(),
    "expm1_": lambda m, v, o: v.expm1_(),
    "floor_": lambda m, v, o: v.floor_(),
    "frac_": lambda m, v, o: v.frac_(),
    "reciprocal_": lambda m, v, o: v.reciprocal_(),
    "sqrt_": lambda m, v, o: v.abs_().sqrt_(),
    "clip_": lambda m, v, o: v.clip_(max=o),
    "div_floor_": lambda m, v, o: v.div_(o, rounding_mode="floor"),
    "scatter_add_": lambda m, v, o: (
        v.scatter_add_(  # a src the index's shape, in v's dtype (torch's checks)
            0, m.zeros((1,) + tuple(v.shape[1:]), dtype=m.int64), o.sum().to(v.dtype).expand((1,) + tuple(v.shape[1:]))
        )
        if v.ndim
        else v.fill_(2.0)
    ),
    "index_put_": lambda m, v, o: v.index_put_((m.tensor([0, 0]),), o.sum(), accumulate=True),
    "logical_not_": lambda m, v, o: v.logical_not_(),
    "logical_and_": lambda m, v, o: v.logical_and_(o),
    "sub_alpha": lambda m, v, o: v.sub_(o, alpha=0.5),
    "unfold_fill_": lambda m, v, o: v.unfold(-1, 2, 1).fill_(1.0),
}


def inplace_extra(rng, pool):
    """An in-place write program_menu lacks, through a view of a pool value; the pool keeps the view."""
    i = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    j = _pick(rng, pool, "f" if rng.random() < 0.9 else "any")
    view, op = str(rng.choice(list(_VIEWS))), str(rng.choice(list(_INPLACE)))

    def call(m, a, o):
        v = _VIEWS[view](a)
        _INPLACE[op](m, v, o)
        return v

    return f"{view}({i}).{op}({j})", call, [i, j]


EXTRA_MENU = [(activation, 3), (loss, 2), (shape_extra, 4), (inplace_extra, 3)]
EXTRA_RATE = 0.15  # the share of a program's steps drawn from EXTRA_MENU
