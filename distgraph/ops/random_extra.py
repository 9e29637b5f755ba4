"""torch's random functions beyond ops/creation.py: normal (all four overloads), poisson, binomial,
randint_like; the generator's state as a tensor (get_rng_state / set_rng_state) and seed(); the BLAS thread
count (get/set_num_threads, through threadpoolctl); and the window functions (hann, hamming, blackman,
bartlett, kaiser), which are deterministic but belong with the other tensor factories torch has.

The draws that take tensors are ops marked `random` (as dropout's mask), so a captured graph draws anew each
run; like torch's, their output requires grad when an input does and their gradient is zero. Every draw
comes from the device's generator (ops/rng.py's `generator`), so dg.manual_seed and set_rng_state replay
them, or from the dg.Generator passed as `generator=`.
"""

import builtins
import contextlib
import math

import numpy as np

from distgraph import dtypes
from distgraph.autograd.tensor import Tensor
from distgraph.backend import device as as_device
from distgraph.backend import device_of_array
from distgraph.errors import DTypeError, InputRangeError, ShapeError
from distgraph.ops import creation
from distgraph.ops.elementwise import _zero_grad
from distgraph.ops.registry import defop
from distgraph.ops.rng import _rng, default_generator, drawing_from, generator, seed_gpus
from distgraph.ops.shape import broadcast_tensors


def _zeros_for_each(ctx, g):
    return tuple(_zero_grad(ctx, g) for _ in ctx.inputs)


@defop("normal_sample", save=())
def _normal_sample(xp, mean, std):
    z = generator(device_of_array(mean)).standard_normal(mean.shape)
    return xp.asarray(mean + std * z, dtype=mean.dtype)


@defop("poisson_sample", save=())
def _poisson_sample(xp, rates):
    return xp.asarray(generator(device_of_array(rates)).poisson(rates), dtype=rates.dtype)


@defop("binomial_sample", save=())
def _binomial_sample(xp, count, prob):
    return xp.asarray(generator(device_of_array(count)).binomial(count.astype(np.int64), prob), dtype=count.dtype)


for _op in (_normal_sample, _poisson_sample, _binomial_sample):
    _op.random = True  # graph passes neither merge (CSE) nor constant-fold a draw
    _op.grad(_zeros_for_each)


def _floating(op, name, x):
    if x.array.dtype.kind != "f":
        raise DTypeError(
            f"{op}: expected a floating-point tensor for {name}, got {x.dtype.name} of shape {tuple(x.shape)}"
        )


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    """torch.normal: N(mean, std) draws. mean and/or std a tensor (broadcast; std >= 0), or both numbers with
    a `size` (default dtype). Tensor draws require grad as their inputs do; the gradient is zero, as torch's."""
    if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
        if size is None:
            raise ShapeError("normal: with a number mean and std, pass size (torch.normal(mean, std, size))")
        if std < 0:
            raise InputRangeError(f"normal expects std >= 0.0, but found std {std}")
        shape = (size,) if isinstance(size, int) else tuple(size)
        out = creation.randn(*shape, generator=generator, dtype=dtype, device=device)
        out = Tensor(out.array * out.array.dtype.type(std) + out.array.dtype.type(mean), device=out.device)
        out.requires_grad = requires_grad
        return out
    if size is not None:
        raise ShapeError("normal: size is taken only with a number mean and std")
    ref = mean if isinstance(mean, Tensor) else std
    m = (
        mean
        if isinstance(mean, Tensor)
        else Tensor(ref.device.xp.asarray(mean, dtype=ref.array.dtype), device=ref.device)
    )
    s = std if isinstance(std, Tensor) else Tensor(ref.device.xp.asarray(std, dtype=ref.array.dtype), device=ref.device)
    _floating("normal", "mean", m)
    _floating("normal", "std", s)
    if bool((s.array < 0).any()):
        raise InputRangeError(f"normal expects all elements of std >= 0.0 (std of shape {tuple(s.shape)})")
    if m.array.dtype != s.array.dtype:
        raise DTypeError(f"normal: mean ({m.dtype.name}) and std ({s.dtype.name}) must have the same dtype")
    with drawing_from(generator, ref.device, "normal"):
        return _normal_sample(*broadcast_tensors(m, s))


def poisson(input, generator=None):
    """torch.poisson: a Poisson draw with each element as its rate (>= 0), in input's floating dtype."""
    _floating("poisson", "input", input)
    if bool((input.array < 0).any()) or bool(np.isnan(input.__array__()).any()):
        raise InputRangeError(
            f"poisson: invalid Poisson rate, expected rate to be non-negative (shape {tuple(input.shape)})"
        )
    with drawing_from(generator, input.device, "poisson"):
        return _poisson_sample(input)


def binomial(count, prob, generator=None):
    """torch.binomial: draws of the number of successes in `count` trials of probability `prob` (same shape)."""
    _floating("binomial", "count", count)
    _floating("binomial", "prob", prob)
    if tuple(count.shape) != tuple(prob.shape) or count.array.dtype != prob.array.dtype:
        raise ShapeError(
            f"binomial: count and prob must have the same shape and dtype, got {count.dtype.name} {tuple(count.shape)} "
            f"and {prob.dtype.name} {tuple(prob.shape)}"
        )
    p = prob.__array__()
    if bool(((p < 0) | (p > 1) | np.isnan(p)).any()) or bool((count.__array__() < 0).any()):
        raise InputRangeError("binomial: expected count >= 0 and 0 <= prob <= 1")
    with drawing_from(generator, count.device, "binomial"):
        return _binomial_sample(count, prob)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    """torch.randint_like: integers in [low, high) shaped like input, in input's dtype (randint_like(x, high)
    or randint_like(x, low, high))."""
    if high is None:
        low, high = 0, low
    if low >= high:
        raise InputRangeError(f"randint_like: expected low < high, got low={low}, high={high}")
    dt = dtypes.from_any(dtype) if dtype is not None else input.dtype
    out = creation.randint(low, high, tuple(input.shape), generator=generator, dtype=dt, device=device or input.device)
    out.requires_grad = requires_grad
    return out


# ---- generator state --------------------------------------------------------------------------------------
def get_rng_state():
    """The cpu generator's state as a uint8 tensor (the default Generator's get_state); set_rng_state with it
    replays the same draws."""
    return default_generator.get_state()


def set_rng_state(new_state):
    """Restore a state from get_rng_state (the cpu generator's; cuda's restart from the saved seed)."""
    default_generator.load_state(new_state, "set_rng_state")


def stash_rng_state(devices=()):
    """What `replay_rng_state` needs to draw again what the generators are about to draw (activation
    checkpointing's recomputation): the cpu generator's state, and for a cuda device a seed. cupy's
    generator state cannot be read back, so its generator is replaced here by one seeded from itself:
    the draws from now on come from that seed, which the replay re-creates."""
    stash = {"cpu": generator(as_device("cpu")).bit_generator.state}
    for dev in devices:
        if dev.type != "cpu":
            seed_ = int(generator(dev).integers(0, 2**63 - 1))
            seed_gpus(seed_, [dev])
            stash[str(dev)] = (dev, seed_)
    return stash


def replay_rng_state(stash):
    """Put the generators in the state `stash_rng_state` recorded (inside `fork_rng`, to leave no trace)."""
    generator(as_device("cpu")).bit_generator.state = stash["cpu"]
    for key, value in stash.items():
        if key != "cpu":
            dev, seed_ = value
            seed_gpus(seed_, [dev])


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True):
    """torch.random.fork_rng: the random draws inside the block leave the generators (cpu, and cuda's
    when it exists) as they were before it."""
    if not enabled:
        yield
        return
    cpu = generator(as_device("cpu"))
    state, others = cpu.bit_generator.state, {k: v for k, v in _rng.items() if k not in ("cpu", "seed")}
    try:
        yield
    finally:
        _rng["cpu"] = cpu
        cpu.bit_generator.state = state
        for key in [k for k in _rng if k not in ("cpu", "seed") and k not in others]:
            del _rng[key]  # a generator first made inside the block
        _rng.update(others)


def seed():
    """torch.seed: seed every generator from the OS's entropy and return that seed."""
    return default_generator.seed()


# ---- BLAS threads ------------------------------------------------------------------------------------
def _threadpool():
    try:
        import threadpoolctl
    except ImportError:
        raise DTypeError(
            "get/set_num_threads need threadpoolctl (pip install threadpoolctl) to reach numpy's BLAS"
        ) from None
    return threadpoolctl


def get_num_threads():
    """The threads numpy's BLAS uses (torch's intra-op thread count has no other counterpart here)."""
    pools = [p["num_threads"] for p in _threadpool().threadpool_info() if p.get("user_api") == "blas"]
    return max(pools) if pools else 1


def set_num_threads(int):  # noqa: A002  (torch's parameter name)
    """Set the threads numpy's BLAS uses, for the rest of the process (as torch's setting lasts)."""
    if isinstance(int, bool) or not isinstance(int, builtins.int) or int < 1:
        raise InputRangeError(f"set_num_threads: expected a positive number of threads, got {int!r}")
    ctl = _threadpool()
    _LIMITERS.append(ctl.threadpool_limits(limits=int, user_api="blas"))


_LIMITERS = []  # kept alive: threadpoolctl's limit holds while its object exists


# ---- windows ------------------------------------------------------------------------------------------
def _window(op, n, periodic, dtype, device, requires_grad, values):
    """A length-n window from `values(k, m)` (k = 0..n-1 over a period of m points): periodic windows are the
    symmetric window of n + 1 points without its last one, as torch's."""
    if n < 0:
        raise ShapeError(f"{op} requires non-negative window_length, got window_length={n}")
    dt = dtypes.from_any(dtype) if dtype is not None else dtypes.get_default_dtype()
    if not dt.is_floating_point:
        raise DTypeError(f"{op} expects a floating point dtype, got {dt.name}")
    dev = as_device(device)
    if n <= 1:
        arr = np.ones(n, dtype=np.float64)
    else:
        m = n + 1 if periodic else n
        arr = values(np.arange(n, dtype=np.float64), m)
    return Tensor(dev.xp.asarray(arr.astype(dt.np)), device=dev, requires_grad=requires_grad)


def _cosines(*coefs):
    return lambda k, m: sum(c * np.cos(2 * math.pi * i * k / (m - 1)) for i, c in enumerate(coefs))


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    return _window("hann_window", window_length, periodic, dtype, device, requires_grad, _cosines(0.5, -0.5))


def hamming_window(
    window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None, layout=None, device=None, requires_grad=False
):
    return _window("hamming_window", window_length, periodic, dtype, device, requires_grad, _cosines(alpha, -beta))


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    return _window("blackman_window", window_length, periodic, dtype, device, requires_grad, _cosines(0.42, -0.5, 0.08))


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    tri = lambda k, m: 1 - np.abs(2 * k / (m - 1) - 1)  # noqa: E731
    return _window("bartlett_window", window_length, periodic, dtype, device, requires_grad, tri)


def kaiser_window(
    window_length, periodic=True, beta=12.0, *, dtype=None, layout=None, device=None, requires_grad=False
):
    kaiser = lambda k, m: np.i0(beta * np.sqrt(np.clip(1 - (2 * k / (m - 1) - 1) ** 2, 0, None))) / np.i0(beta)  # noqa: E731
    return _window("kaiser_window", window_length, periodic, dtype, device, requires_grad, kaiser)
