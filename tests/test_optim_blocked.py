"""Optimizer updates run in cache-sized blocks (optim/blocked.py) give the bits of the whole-array update."""

import numpy as np
import pytest

from distgraph.optim import functional
from distgraph.optim.blocked import BLOCK_BYTES, MIN_BYTES, PROBE, in_blocks

CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, maximize=True)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    ("adam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True, maximize=True)),
    ("nadam", dict(lr=1e-2, weight_decay=1e-2)),
    ("radam", dict(lr=1e-2)),
    ("adamax", dict(lr=1e-2, weight_decay=1e-2)),
    ("adadelta", dict(lr=1.0, weight_decay=1e-2)),
    ("rprop", dict(lr=1e-2)),
    ("asgd", dict(lr=1e-2, t0=2, weight_decay=1e-2)),
    ("rmsprop", dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-2)),
    ("adagrad", dict(lr=1e-1, lr_decay=1e-2, initial_accumulator_value=0.1)),
]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_blocked_update_gives_the_whole_updates_bits(name, options, dtype):
    update = functional.UPDATES[name]
    rng = np.random.default_rng(0)
    shape = (MIN_BYTES // np.dtype(dtype).itemsize // 250 + 7, 250)  # four blocks and a remainder
    param = rng.standard_normal(shape).astype(dtype)
    blocked, whole = param.copy(), param.copy()
    state_blocked, state_whole = {}, {}
    for step in range(7):  # rprop's sign flips, radam's rectification (rho_t > 5), asgd's averaging (t0=2)
        grad = rng.standard_normal(shape).astype(dtype)
        update(blocked, grad, state_blocked, **options)
        update.__wrapped__(whole, grad, state_whole, **options)
        assert np.array_equal(blocked, whole), f"{name} step {step + 1}"
        _same(state_blocked, state_whole)


def test_amsgrad_switched_on_later_makes_a_whole_state_array():
    update, rng = functional.UPDATES["adam"], np.random.default_rng(1)
    param = rng.standard_normal(MIN_BYTES // 4 + 100).astype(np.float32)
    blocked, whole, sb, sw = param.copy(), param.copy(), {}, {}
    for step in range(4):
        grad = rng.standard_normal(param.shape).astype(np.float32)
        options = dict(lr=1e-2, amsgrad=step >= 2)
        update(blocked, grad, sb, **options)
        update.__wrapped__(whole, grad, sw, **options)
    assert sb["max_exp_avg_sq"].shape == param.shape
    assert np.array_equal(blocked, whole)
    _same(sb, sw)


def _recording(calls, make_state=False):
    def add(param, grad, state, **options):
        calls.append(param.size)
        if make_state and "seen" not in state:
            state["seen"] = np.zeros_like(param)
        param += grad
        state["step"] = state.get("step", 0) + 1

    return in_blocks(add)


def test_large_arrays_run_as_a_probe_then_blocks():
    calls = []
    block = BLOCK_BYTES // 4
    size = 4 * block + PROBE + 1000
    param, grad, state = np.zeros(size, np.float32), np.arange(size, dtype=np.float32), {"step": 3}
    _recording(calls)(param, grad, state)
    assert size * 4 >= MIN_BYTES and calls == [PROBE, block, block, block, block, 1000]
    assert np.array_equal(param, grad)
    assert state == {"step": 4}  # every block started from step 3; the last one's count is kept


@pytest.mark.parametrize(
    "param,state",
    [
        (np.zeros((4 * MIN_BYTES // 4,), np.float32)[::2], {}),  # not contiguous
        (np.zeros((600, 600), np.float32).T, {}),  # Fortran order
        (np.zeros(MIN_BYTES // 4 - 1, np.float32), {}),  # fits the cache whole
        (np.zeros(2 * MIN_BYTES // 4, np.float32), {"history": []}),  # a mutable entry blocks would share
        (np.zeros(2 * MIN_BYTES // 4, np.float32), {"count": np.zeros(())}),  # a 0-d array, same
    ],
    ids=["strided", "fortran", "small", "list-state", "0d-state"],
)
def test_other_arrays_and_state_run_whole(param, state):
    calls = []
    grad = np.ones(param.shape, np.float32)
    _recording(calls)(param, grad, state)
    assert calls == [param.size] and np.all(param == 1)


def test_a_call_that_makes_state_is_undone_and_run_whole():
    calls = []
    size = 4 * BLOCK_BYTES // 4
    param, grad, state = np.zeros(size, np.float32), np.ones(size, np.float32), {}
    update = _recording(calls, make_state=True)
    update(param, grad, state)
    assert calls == [PROBE, param.size]  # the probe made state["seen"]: undone, then the whole array once
    assert np.all(param == 1) and state["seen"].shape == param.shape and state["step"] == 1
    update(param, grad, state)  # the state exists now: blocks
    assert calls[2] == PROBE and len(calls) == 2 + 1 + 4 and np.all(param == 2) and state["step"] == 2


def test_a_none_entry_an_update_fills_runs_whole():
    """A loaded torch SGD state may hold momentum_buffer=None: the update fills it, whole, not block by block."""
    param, grad = np.ones(2 * MIN_BYTES // 4, np.float32), np.full(2 * MIN_BYTES // 4, 0.5, np.float32)
    state = {"momentum_buffer": None}
    update = functional.UPDATES["sgd"]
    update(param, grad, state, lr=0.1, momentum=0.9)
    assert state["momentum_buffer"].shape == param.shape
    update(param, grad, state, lr=0.1, momentum=0.9)  # (it raised on block-sized state)
    whole, st = np.ones_like(param), {"momentum_buffer": None}
    for _ in range(2):
        update.__wrapped__(whole, grad, st, lr=0.1, momentum=0.9)
    assert np.array_equal(param, whole)
