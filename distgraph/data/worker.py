"""What runs inside a DataLoader worker process, as torch.utils.data's worker loop.

Protocol. The main process sends on the worker's task pipe; the worker answers on its result pipe:
- `(idx, index)`: fetch that batch (see `fetch.py`); the answer is `(idx, batch)`, `(idx, WorkerException)`
  when the fetch raised, or `(idx, IterableEnd)` when an iterable dataset's copy is used up (later
  tasks are then ignored until the next epoch, as torch does).
- `RESUME`: persistent workers' next epoch: a new fetcher (a fresh iterator of an iterable dataset),
  answered `(RESUME, None)`.
- `None`: exit.

Seeding, as torch: the worker's seed is `base_seed + worker_id`; it seeds Python's `random` and
distgraph's generator (`dg.manual_seed`), and numpy's legacy global generator gets torch's
`_generate_state(base_seed, worker_id)`. So random transforms differ between workers and repeat for the
same base seed. Then `worker_init_fn(worker_id)` runs; an error there (or in building the fetcher) is
the answer to the worker's first task. A worker exits on its own when the main process is gone (its
parent pid changes) or its result pipe is closed.
"""

import os
import pickle
import random
import sys
import traceback
from dataclasses import dataclass

import numpy as np

from distgraph.data.dataset import IterableDataset
from distgraph.data.fetch import make_fetcher
from distgraph.ops.rng import manual_seed

RESUME = "distgraph.data.worker.RESUME"
_PARENT_CHECK_S = 1.0  # how often an idle worker checks that the main process is still there

_worker_info = None


@dataclass(frozen=True)
class WorkerInfo:
    """What `get_worker_info()` returns inside a worker: its id, the number of workers, its seed and
    this process's copy of the dataset."""

    id: int
    num_workers: int
    seed: int
    dataset: object


def get_worker_info():
    """This worker's WorkerInfo inside a DataLoader worker process; None in the main process."""
    return _worker_info


@dataclass(frozen=True)
class IterableEnd:
    """A worker's answer once its copy of an iterable dataset is used up."""

    worker_id: int


class _KeyErrorMessage(str):
    """KeyError shows repr() of its argument; this keeps the traceback text readable (as torch)."""

    def __repr__(self):
        return str(self)


class WorkerException:
    """An exception raised in a worker, carried to the main process as its type and traceback text."""

    def __init__(self, worker_id):
        exc_type, exc, tb = sys.exc_info()
        self.type_name, self.worker_id = exc_type.__name__, worker_id
        self.text = "".join(traceback.format_exception(exc_type, exc, tb))
        try:  # a class defined inside a function cannot travel: raised as a RuntimeError instead
            pickle.dumps(exc_type)
            self.exc_type = exc_type
        except Exception:
            self.exc_type = RuntimeError

    def reraise(self):
        """Raise the worker's exception type in this process with the worker id and original traceback."""
        msg = f"Caught {self.type_name} in DataLoader worker process {self.worker_id}.\nOriginal {self.text}"
        if self.exc_type is KeyError:
            msg = _KeyErrorMessage(msg)
        try:
            exception = self.exc_type(msg)
        except Exception:  # a type that takes other arguments
            raise RuntimeError(msg) from None
        raise exception


def generate_state(base_seed, worker_id):
    """torch's `_generate_state`: a SeedSequence-like hash of (worker_id, base_seed) into four 32-bit
    words, which seed numpy's legacy global generator in each worker."""
    mask = 0xFFFFFFFF
    hash_const = [0x43B0D7E5]

    def hash32(value):
        value = (value ^ hash_const[0]) & mask
        hash_const[0] = (hash_const[0] * 0x931E8875) & mask
        value = (value * hash_const[0]) & mask
        return (value ^ (value >> 16)) & mask

    def mix(x, y):
        result = (((0xCA01F9DD * x) & mask) - ((0x4973F715 * y) & mask)) & mask
        return (result ^ (result >> 16)) & mask

    pool = [hash32(v) for v in (worker_id, base_seed & mask, base_seed >> 32, 0)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hash32(pool[src]))
    state, const_b = [], 0x8B51F9DD
    for value in pool:
        value = (value ^ const_b) & mask
        const_b = (const_b * 0x58F38DED) & mask
        value = (value * const_b) & mask
        state.append((value ^ (value >> 16)) & mask)
    return state


def _seed(base_seed, worker_id):
    seed = base_seed + worker_id
    random.seed(seed)
    manual_seed(seed)
    np.random.seed(generate_state(base_seed, worker_id))
    return seed


def worker_loop(dataset, fetch_options, base_seed, init_fn, worker_id, num_workers, pipes, main_pid):
    """The worker process's main function; `fetch_options` = (auto_collation, collate_fn, drop_last,
    default_collate), `pipes` = (its task and result ends, the main process's ends), `main_pid` the main
    process's pid (passed, not read here: the main process may already be gone when the worker starts)."""
    global _worker_info
    tasks, results, main_ends = pipes
    for conn in main_ends:  # a forked copy of the main process's ends would keep the pipes open
        conn.close()  # then: when the main process closes its result end, a blocked send here fails at once
    _worker_info = WorkerInfo(worker_id, num_workers, _seed(base_seed, worker_id), dataset)
    try:
        if init_fn is not None:
            init_fn(worker_id)
        fetcher, error = make_fetcher(dataset, *fetch_options), None
    except Exception:
        fetcher, error = None, WorkerException(worker_id)
    try:
        _serve(dataset, fetch_options, worker_id, tasks, results, fetcher, error, main_pid)
    except (EOFError, OSError, KeyboardInterrupt):  # the main process closed the pipes or is gone
        pass


def _serve(dataset, fetch_options, worker_id, tasks, results, fetcher, error, main_pid):
    ended = False
    while True:
        if not tasks.poll(_PARENT_CHECK_S):
            if os.getppid() != main_pid:
                return
            continue
        task = tasks.recv()
        if task is None:
            return
        if task == RESUME:
            try:
                fetcher, error, ended = make_fetcher(dataset, *fetch_options), None, False
            except Exception:
                fetcher, error, ended = None, WorkerException(worker_id), False
            results.send((RESUME, None))
            continue
        if ended:
            continue
        idx, index = task
        if error is not None:
            data, error = error, None
        else:
            try:
                data = fetcher.fetch(index)
            except StopIteration:
                if not isinstance(dataset, IterableDataset):
                    data = WorkerException(worker_id)
                else:
                    data, ended = IterableEnd(worker_id), True
            except Exception:
                data = WorkerException(worker_id)
        _send(results, idx, data, worker_id)


def _send(results, idx, data, worker_id):
    """Send one answer; a batch that cannot be pickled becomes the error it raised (not a lost batch)."""
    try:
        results.send((idx, data))
    except OSError:
        raise
    except Exception:
        results.send((idx, WorkerException(worker_id)))
