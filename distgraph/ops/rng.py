"""Random generators: each device's default one (what `dg.manual_seed` seeds) and `dg.Generator`, torch's
Generator API over a numpy Generator (cupy's on a GPU).

Every draw reads `generator(dev)`: the process's generator of that device, or this thread's own inside
`seeded_draws` or `drawing_from` (a draw given `generator=`: the draw reads the Generator's stream and leaves
the defaults untouched). The streams are numpy's and cupy's, not torch's: a seed fixes distgraph's numbers,
which are not the numbers torch draws for that seed (the distributions are the same).
"""

import contextlib
import functools
import inspect
import json
import os
import threading

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, on
from distgraph.backend import device as as_device
from distgraph.errors import DeviceError, DTypeError, InputRangeError

_rng = {"cpu": np.random.default_rng(0), "seed": 0}
_thread = threading.local()  # `rng`: this thread's own generators inside `seeded_draws` / `drawing_from`
_NEW_GENERATOR_SEED = 67280421310721  # a new torch.Generator's initial_seed()


def _checked_seed(seed, op):
    """As torch's: any seed in [-2**63, 2**64) is taken and a negative one maps into uint64 (seed + 2**64, so
    -3 and 2**64-3 seed the same stream, and `initial_seed()` reads 2**64-3); numpy's generators take no
    negative seed, hence the mapping here. Outside that range torch refuses, and so does this."""
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise InputRangeError(f"{op}: seed must lie in [-2**63, 2**64) (as torch's), got {seed}")
    return seed % 2**64


def _entropy_seed():
    """A seed from the OS's entropy, as torch.seed() draws one (63 bits: a non-negative int64)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def _new_stream(dev, seed):
    """A numpy Generator (cpu) or cupy one made on dev's GPU, seeded by `seed`."""
    if dev.type == "cpu":
        return np.random.default_rng(seed)
    with on(dev):  # (its state lives on the GPU it draws on)
        return _CupyGenerator(dev.xp.random.default_rng(seed), dev.xp, dev)


def manual_seed(seed):
    """Seed every generator distgraph uses (numpy on cpu, cupy on cuda if already loaded); returns the
    default Generator, as torch's does."""
    seed = _checked_seed(seed, "manual_seed")
    _rng["cpu"] = np.random.default_rng(seed)
    _rng["seed"] = seed
    for key in [k for k in _rng if k.startswith("cuda")]:  # each GPU's, remade from the seed when next drawn
        del _rng[key]
    return default_generator


def initial_seed():
    return _rng["seed"]


def generator(dev):
    """The random generator of a device (numpy Generator on cpu, cupy's on each GPU, as torch's one per
    device, all seeded alike): the process's, or inside `seeded_draws` this thread's own. GPU 0's is kept
    under "cuda", GPU N's under "cuda:N" (`seed_gpus` writes them; made from the seed when first drawn)."""
    rng = getattr(_thread, "rng", None) or _rng
    if dev.type == "cpu":
        gen = rng.get("cpu")
        if gen is None:
            gen = rng["cpu"] = np.random.default_rng(rng["seed"])
        return gen
    gen = rng.get("cuda" if dev.index == 0 else str(dev))
    return gen if gen is not None else seed_gpus(rng["seed"], [dev])


def seed_gpus(seed, devices):
    """Give each cuda device of `devices` a generator of its own seeded by `seed`, made on its GPU, where
    `generator` reads (the process's, or this thread's inside `seeded_draws`); the others are left as they
    are. The one writer of the GPUs' generators: dg.cuda.manual_seed (the current GPU's), manual_seed_all
    (every GPU's), activation checkpointing's stash and replay. Returns the last one made."""
    rng, gen = getattr(_thread, "rng", None) or _rng, None
    for dev in devices:
        gen = rng["cuda" if dev.index == 0 else str(dev)] = _new_stream(dev, seed)
    return gen


@contextlib.contextmanager
def seeded_draws(seed):
    """Random draws of this thread inside the block come from generators of its own seeded by `seed`,
    leaving the process's untouched: concurrent tasks each seeded by the caller draw the same numbers
    whatever order their threads run in (the LocalExecutor's pipeline tasks)."""
    with _thread_generators({"seed": int(seed)}):
        yield


@contextlib.contextmanager
def _thread_generators(rng):
    saved = getattr(_thread, "rng", None)
    _thread.rng = rng
    try:
        yield
    finally:
        _thread.rng = saved


def drawing_from(gen, dev, op):
    """The context a draw of `op` on `dev` runs in: with `gen` (a dg.Generator of dev's type) every
    `generator(dev)` inside reads gen's stream; with None, the defaults as always (no context at all)."""
    if gen is None:
        return contextlib.nullcontext()
    if not isinstance(gen, Generator):
        raise DTypeError(f"{op}: generator must be a distgraph.Generator, got {type(gen).__name__}")
    if gen.device.type != dev.type:
        raise DeviceError(f"{op}: Expected a '{dev.type}' device type for generator but found '{gen.device.type}'")
    return _thread_generators({"seed": gen.initial_seed(), str(dev) if dev.index else dev.type: gen.stream})


def takes_generator(op):
    """Decorator: the in-place sampler method `op` (uniform_, normal_, random_, ...) takes torch's `generator=`
    keyword, its draws then read that Generator's stream (`drawing_from`) and leave the device's default alone."""

    def wrap(fn):
        @functools.wraps(fn)
        def method(self, *args, generator=None, **kwargs):
            with drawing_from(generator, self.device, op):
                return fn(self, *args, **kwargs)

        signature = inspect.signature(fn)
        keyword = inspect.Parameter("generator", inspect.Parameter.KEYWORD_ONLY, default=None)
        method.__signature__ = signature.replace(parameters=[*signature.parameters.values(), keyword])
        return method

    return wrap


class Generator:
    """torch.Generator: a random stream of its own for the draws given `generator=`. manual_seed returns
    self (`dg.Generator().manual_seed(0)`), get_state/set_state save and replay it; a new one is seeded
    with torch's default seed. Its numbers are numpy's (cupy's on cuda), not torch's for that seed."""

    def __init__(self, device="cpu"):
        self.device = as_device(device)
        self.manual_seed(_NEW_GENERATOR_SEED)

    @property
    def stream(self):
        """The numpy (or cupy) Generator the draws read."""
        return self._stream

    def manual_seed(self, seed):
        self._seed = _checked_seed(seed, "Generator.manual_seed")
        self._stream = _new_stream(self.device, self._seed)
        return self

    def seed(self):
        """Reseed from the OS's entropy; returns that seed."""
        seed = _entropy_seed()
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The state as a uint8 tensor; set_state with it replays the draws made after this call. cupy's state
        cannot be read back, so on cuda the stream is replaced by one seeded from itself, which the state names."""
        if self.device.type == "cpu":
            state = {"seed": self.initial_seed(), "bit_generator": self.stream.bit_generator.state}
        else:
            state = {"seed": self.initial_seed(), "stream_seed": int(self.stream.integers(0, 2**63 - 1))}
            self._restore(state)
        return Tensor(np.frombuffer(json.dumps(state).encode(), dtype=np.uint8).copy())

    def set_state(self, new_state):
        """Restore a state from get_state (this Generator's or another's of the same device type)."""
        return self.load_state(new_state, "Generator.set_state")

    def load_state(self, new_state, op):
        """set_state, its errors naming `op` (dg.set_rng_state's are the default Generator's)."""
        if not isinstance(new_state, Tensor) or new_state.array.dtype != np.uint8 or new_state.ndim != 1:
            raise DTypeError(f"{op}: RNG state must be the 1-d uint8 tensor get_state returns")
        try:
            self._restore(json.loads(bytes(new_state.__array__()).decode()))
        except (ValueError, KeyError, TypeError) as e:
            raise InputRangeError(f"{op}: not a state from a {self.device.type} Generator's get_state ({e})") from None
        return self

    def _restore(self, state):
        seed = int(state["seed"])
        stream = _new_stream(self.device, int(state.get("stream_seed", seed)))
        if self.device.type == "cpu":
            stream.bit_generator.state = state["bit_generator"]
        self._seed, self._stream = seed, stream

    def __repr__(self):
        return f"<distgraph.Generator device={self.device} initial_seed={self.initial_seed()}>"


class _DefaultGenerator(Generator):
    """torch.default_generator: the cpu generator every draw without `generator=` reads (this thread's inside
    `seeded_draws`). Seeding it seeds every device's, as dg.manual_seed does."""

    def __init__(self):
        self.device = CPU

    @property
    def stream(self):
        return generator(CPU)

    def manual_seed(self, seed):
        return manual_seed(seed)

    def initial_seed(self):
        return initial_seed()

    def _restore(self, state):
        gen = np.random.default_rng()
        gen.bit_generator.state = state["bit_generator"]
        manual_seed(int(state["seed"]))
        _rng["cpu"] = gen


default_generator = _DefaultGenerator()


class _CupyGenerator:
    """cupy's Generator with the numpy Generator methods distgraph calls that cupy's lacks (`normal`,
    `permutation`: its Generator has `standard_normal` and `random`), drawn on the GPU from those; every
    draw on the generator's GPU (`dev`; None: cupy's current one)."""

    def __init__(self, gen, xp, dev=None):
        self._gen, self._xp, self._dev = gen, xp, dev

    def __getattr__(self, name):
        method = getattr(self._gen, name)
        if self._dev is None or not callable(method):
            return method

        def on_its_gpu(*args, **kwargs):
            with on(self._dev):
                return method(*args, **kwargs)

        return on_its_gpu

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self.standard_normal(size)

    def permutation(self, n):
        with on(self._dev) if self._dev is not None else contextlib.nullcontext():
            return self._xp.argsort(self._gen.random(n))
