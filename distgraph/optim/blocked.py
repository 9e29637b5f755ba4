"""Elementwise updates on large host arrays, run one cache-sized block at a time.

An update such as Adam's is a dozen numpy passes over the parameter, its gradient, its state and a
scratch array. On a parameter of millions of elements each pass streams every array it touches
through memory, so the step is bound by memory traffic, not arithmetic: before this, distgraph's
optimizers took 1.24–1.78x torch's step time on the MLP 784-1024-1024-10 (`distgraph bench optim`).
Every update of `functional.UPDATES` is elementwise (an update on a slice of the parameter is that
slice of the update), so running the whole chain on one block of `BLOCK_BYTES` per array keeps the
block in the core's cache from its first pass to its last: the same operations on the same elements,
hence the same bits, with a fraction of the traffic.

The wrapper knows nothing of the update's state layout. Each block gets a copy of the state dict
whose parameter-shaped arrays are that block's views; the number-valued entries (step counts, NAdam's
mu_product, ASGD's eta) start from the same values in every block and are taken from the last one.
The first call is a small probe of `PROBE` elements: when it adds or replaces a state entry (the
first step makes the state; amsgrad switched on later makes its array), those elements are put back as
they were and the update runs whole. cupy
arrays, arrays under `MIN_BYTES` or not contiguous, and state of any other kind run whole.
"""

import functools
import numbers

import numpy as np

BLOCK_BYTES = 256 * 1024  # per array: the ~6 arrays of Adam's chain fit a 2 MiB L2 (measured: 64-512 KiB alike)
PROBE = 256  # elements of the first call, which may turn out to make the state (then undone)
MIN_BYTES = 4 * BLOCK_BYTES  # smaller parameters fit the cache whole (measured: 0.6-0.8 MB ran 10-25 % slower blocked)


def in_blocks(update):
    """`update(param, grad, state, **options)` run block by block on large contiguous numpy arrays."""

    @functools.wraps(update)
    def run(param, grad, state, **options):
        flats = _flat_views(param, grad, state)
        if flats is None:
            return update(param, grad, state, **options)
        flat_param, flat_grad, flat_state = flats
        block = BLOCK_BYTES // param.itemsize
        probe = slice(0, PROBE)  # the first call: small, so undoing it is cheap
        before = flat_param[probe].copy(), {k: v[probe].copy() for k, v in flat_state.items()}
        sub = state
        for part in [probe, *(slice(start, start + block) for start in range(PROBE, flat_param.size, block))]:
            views = {k: v[part] for k, v in flat_state.items()}
            sub = {**state, **views}
            update(flat_param[part], flat_grad[part], sub, **options)
            if part is probe and (sub.keys() != state.keys() or any(sub[k] is not v for k, v in views.items())):
                flat_param[probe] = before[0]  # the state is being made: undo the probe, run whole
                for k, v in before[1].items():
                    flat_state[k][probe] = v
                return update(param, grad, state, **options)
        state.update((k, v) for k, v in sub.items() if k not in flat_state)
        return None

    return run


def _flat_views(param, grad, state):
    """(param, grad, {key: state array}) as 1-d views when blocking applies, else None: numpy arrays of
    at least `MIN_BYTES`, C-contiguous, every state entry a number or an array shaped like param."""
    if type(param) is not np.ndarray or param.size * param.itemsize < MIN_BYTES:
        return None
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    # (a None entry is state an update may fill, e.g. a loaded momentum_buffer: blocks would each fill their own)
    others_plain = all(isinstance(v, numbers.Number) for k, v in state.items() if k not in arrays)
    together = [param, grad, *arrays.values()]
    if not others_plain or not all(
        type(a) is np.ndarray and a.shape == param.shape and a.flags.c_contiguous for a in together
    ):
        return None
    return param.reshape(-1), grad.reshape(-1), {k: v.reshape(-1) for k, v in arrays.items()}
