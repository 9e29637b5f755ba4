"""Ops that run with numpy's ufunc buffer cut to one row (ops/cache_blocks.row_buffer): softmax and
log_softmax along the last dim, softmax's gradient, cross_entropy and its gradient, batch_norm (training's
fused op, eval's and instance_norm's normalization), group_norm, rms_norm, normalize and layer_norm give
the bits they give with the default buffer (forward and gradient, for a full, a broadcast and a strided
output gradient), really run with the cut buffer at these shapes, and leave np.getbufsize() as it was,
also when the op raises inside."""

import contextlib

import numpy as np
import pytest

import distgraph as dg
import distgraph.nn.functional as F
from distgraph.ops import cache_blocks, fused_batch_norm, fused_norm, linalg, loss
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red

_RNG = np.random.default_rng(3)
_TARGET = np.arange(64) * 7 % 1000
_TARGET_IGNORED = np.where(np.arange(64) % 5 == 0, 3, _TARGET)


def _bn_eval(x, w, b):
    c = x.shape[1]
    return F.batch_norm(x, dg.tensor(np.full(c, 0.1, x.array.dtype)), dg.tensor(np.full(c, 1.3, x.array.dtype)),
                        w, b, training=False)  # fmt: skip


# name: (input shapes, fn over tensors); the first input is x, the rest float parameters
_CASES = {
    "softmax": ([(64, 300)], lambda x: F.softmax(x, -1)),
    "softmax (256, 1024): blocked gradient": ([(256, 1024)], lambda x: F.softmax(x, -1)),
    "log_softmax": ([(64, 300)], lambda x: F.log_softmax(x, -1)),
    "cross_entropy": ([(64, 1000)], lambda x: F.cross_entropy(x, dg.tensor(_TARGET), reduction="none")),
    "cross_entropy (mean)": ([(64, 1000)], lambda x: F.cross_entropy(x, dg.tensor(_TARGET))),
    "cross_entropy (weight, smoothing, ignore_index)": (
        [(64, 1000), (1000,)],
        lambda x, w: F.cross_entropy(
            x, dg.tensor(_TARGET_IGNORED), weight=w.abs(), ignore_index=3, label_smoothing=0.1, reduction="none"
        ),
    ),
    "batch_norm (train)": (
        [(8, 4, 16, 16), (4,), (4,)],
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    ),
    "batch_norm (eval)": ([(8, 4, 16, 16), (4,), (4,)], _bn_eval),
    "instance_norm": ([(8, 4, 16, 16), (4,), (4,)], lambda x, w, b: F.instance_norm(x, weight=w, bias=b)),
    "group_norm": ([(4, 8, 16, 16), (8,), (8,)], lambda x, w, b: F.group_norm(x, 4, w, b)),
    "rms_norm": ([(32, 300), (300,)], lambda x, w: F.rms_norm(x, (300,), w)),
    "rms_norm over two dims": ([(4, 8, 40), (8, 40)], lambda x, w: F.rms_norm(x, (8, 40), w)),
    "normalize": ([(32, 300)], lambda x: F.normalize(x, dim=1)),
    "layer_norm": ([(40, 300), (300,), (300,)], lambda x, w, b: F.layer_norm(x, (300,), w, b)),
    "layer_norm (1024)": ([(40, 1024), (1024,), (1024,)], lambda x, w, b: F.layer_norm(x, (1024,), w, b)),
}


def _strided(shape, dtype):
    """A view of every other element of a wider gradient: the op's rule gets a strided array."""
    return dg.tensor(_RNG.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype))[..., ::2]


_GRADS = {  # the output gradient, as a tensor
    "full": lambda shape, dtype: dg.tensor(_RNG.standard_normal(shape).astype(dtype)),
    "broadcast": None,  # out.sum().backward()
    "strided": _strided,
}


def _plain(monkeypatch):
    """row_buffer off: every op runs with numpy's default buffer."""
    monkeypatch.setattr(cache_blocks, "row_buffer", lambda x, n: contextlib.nullcontext())


def _run(fn, arrays, seed):
    xs = [dg.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    if seed is None or out.ndim == 0:
        out.sum().backward()
    else:
        out.backward(seed(tuple(out.shape), arrays[0].dtype))
    return [out.detach().numpy()] + [x.grad.numpy() for x in xs if x.grad is not None]  # (no class weight's)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad", list(_GRADS))
@pytest.mark.parametrize("name", list(_CASES))
def test_row_buffer_gives_the_default_buffers_bits_and_restores_it(name, grad, dtype, monkeypatch):
    shapes, fn = _CASES[name]
    arrays = [_RNG.standard_normal(s).astype(dtype) for s in shapes]
    seed_rng = _RNG.bit_generator.state
    engaged = []
    real = cache_blocks.row_buffer

    def spy(x, n):
        ctx = real(x, n)
        engaged.append(ctx is not cache_blocks._UNCHANGED)
        return ctx

    before = np.getbufsize()
    monkeypatch.setattr(cache_blocks, "row_buffer", spy)
    got = _run(fn, arrays, _GRADS[grad])
    assert np.getbufsize() == before
    assert any(engaged), f"{name}: the row buffer was never cut"
    _RNG.bit_generator.state = seed_rng  # the same output gradient again
    _plain(monkeypatch)
    want = _run(fn, arrays, _GRADS[grad])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name


def _inf_row(shape, dtype=np.float32):
    a = _RNG.standard_normal(shape).astype(dtype)
    a.reshape(-1)[: shape[-1]] = np.inf  # inf − inf = nan: 'invalid' raised inside the op's with-block
    return a


_X = _inf_row((64, 1000))
_X4 = _inf_row((8, 4, 16, 16))
_ARRAY_OPS = {  # each raises FloatingPointError inside its row-buffer block
    "softmax": lambda: linalg._softmax.forward(np, _X, axis=1),
    "log_softmax": lambda: linalg._log_softmax.forward(np, _X, axis=1),
    "cross_entropy": lambda: loss._cross_entropy.forward(np, _X, _TARGET),
    "cross_entropy_backward": lambda: loss._cross_entropy_backward.forward(np, np.float32(1), _X, _TARGET),
    "softmax's gradient (blocked)": lambda: cache_blocks.softmax_grad(
        np.full((1024, 1024), 0.5, np.float32), np.full((1024, 1024), 3e38, np.float32), 1
    ),
    "batch_norm_train": lambda: fused_batch_norm._batch_norm_train.forward(
        np, _X4, eps=1e-5, has_weight=False, has_bias=False
    ),
    "layer_norm": lambda: fused_norm.layer_norm_forward(np, _X, None, None, 1, 1e-5),
    "layer_norm's gradient": lambda: fused_norm.layer_norm_grads(np, _X, _X, None, 1, 1e-5, True, True),
}


@pytest.mark.parametrize("name", list(_ARRAY_OPS))
def test_an_op_raising_inside_leaves_the_buffer_as_it_was(name):
    before = np.getbufsize()
    with np.errstate(invalid="raise", over="raise"), pytest.raises(FloatingPointError):
        _ARRAY_OPS[name]()
    assert np.getbufsize() == before


_COMPOSED = {  # (module, function the op calls inside its block, call)
    "batch_norm (eval)": (ew, "rsqrt", lambda x, w, b: _bn_eval(x, w, b)),
    "instance_norm": (ew, "rsqrt", lambda x, w, b: F.instance_norm(x, weight=w, bias=b)),
    "group_norm": (red, "mean", lambda x, w, b: F.group_norm(x, 2, w, b)),
    "rms_norm": (red, "mean", lambda x, w, b: F.rms_norm(x, (16, 16))),
    "normalize": (red, "norm", lambda x, w, b: F.normalize(x.reshape(32, 256), dim=1)),
}


@pytest.mark.parametrize("name", list(_COMPOSED))
def test_a_composed_norm_raising_inside_leaves_the_buffer_as_it_was(name, monkeypatch):
    module, attr, call = _COMPOSED[name]

    def boom(*args, **kwargs):
        assert np.getbufsize() < 8192  # (inside the cut buffer)
        raise RuntimeError("boom")

    monkeypatch.setattr(module, attr, boom)
    x = dg.tensor(_RNG.standard_normal((8, 4, 16, 16)).astype(np.float32))
    w, b = dg.tensor(np.ones(4, np.float32)), dg.tensor(np.zeros(4, np.float32))
    before = np.getbufsize()
    with pytest.raises(RuntimeError, match="boom"):
        call(x, w, b)
    assert np.getbufsize() == before


def test_row_buffer_cuts_only_float32_and_float64_c_contiguous_numpy_rows_from_row_min():
    a = np.zeros((4, 1024), np.float32)
    with cache_blocks.row_buffer(a, 1000):
        assert np.getbufsize() == 992  # (a multiple of 16)
    assert np.getbufsize() == 8192
    unchanged = [
        (a, cache_blocks.ROW_MIN - 1),  # short rows: the buffer is the faster
        (a, 8192),  # a row as long as the buffer: numpy takes the direct loop already
        (a.astype(np.float16), 1024),  # float16 sums run in float32 through the buffer: their bits follow it
        (a.T, 1024),  # not C-contiguous: the last axis is not the rows in memory
        (a.astype(np.int64), 1024),
        ([1.0] * 1024, 1024),  # not a numpy array (cupy's, say)
    ]
    for x, n in unchanged:
        assert cache_blocks.row_buffer(x, n) is cache_blocks._UNCHANGED
