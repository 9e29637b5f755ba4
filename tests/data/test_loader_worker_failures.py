"""DataLoader workers that fail: an exception re-raised with the worker id and original traceback, a
killed worker and a timeout as a DataLoaderError (never a hang), and no worker process left behind
when an epoch ends, an iterator is dropped, or a worker dies."""

import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from distgraph.data import DataLoader, Dataset, get_worker_info
from distgraph.errors import DataLoaderError


class Failing(Dataset):
    """Samples 0..5; sample `bad` runs `action` in the worker instead."""

    def __init__(self, bad, action):
        self.bad, self.action = bad, action

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == self.bad:
            self.action(i)
        return i


def value_error(i):
    raise ValueError(f"sample {i} is corrupt")


def key_error(i):
    raise KeyError("label")


def kill_self(i):
    os.kill(os.getpid(), signal.SIGKILL)


def sleep(i):
    time.sleep(1.0)


def new_workers(make):
    """What make() returns, and the worker processes it started."""
    before = set(multiprocessing.active_children())
    out = make()
    return out, [p for p in multiprocessing.active_children() if p not in before]


def assert_gone(workers):
    assert workers
    for w in workers:
        assert not w.is_alive() and not psutil.pid_exists(w.pid), w


def test_an_exception_is_reraised_with_the_worker_id_and_traceback_and_the_epoch_goes_on():
    """As torch: the batch's error is raised in its place; the next batch still comes."""
    it, workers = new_workers(lambda: iter(DataLoader(Failing(3, value_error), batch_size=2, num_workers=2)))
    assert next(it).tolist() == [0, 1]
    with pytest.raises(
        ValueError, match="(?s)Caught ValueError in DataLoader worker process 1.*Original Traceback"
    ) as err:
        next(it)
    assert "in value_error" in str(err.value) and "sample 3 is corrupt" in str(err.value)
    assert next(it).tolist() == [4, 5]
    with pytest.raises(StopIteration):
        next(it)
    assert_gone(workers)  # an exhausted epoch stops its workers


def test_a_key_error_keeps_its_traceback_readable_and_a_local_exception_type_becomes_a_runtime_error():
    with pytest.raises(KeyError) as err:
        list(DataLoader(Failing(0, key_error), batch_size=2, num_workers=1))
    assert "\n" in str(err.value) and "Caught KeyError in DataLoader worker process 0" in str(err.value)

    class Local(Exception):
        pass

    def local(i):
        raise Local("no such sample")

    with pytest.raises(RuntimeError, match="(?s)Caught Local in DataLoader worker process 0.*no such sample"):
        list(DataLoader(Failing(0, local), batch_size=2, num_workers=1))


def test_errors_in_worker_init_fn_and_an_unpicklable_batch_are_raised_not_hung():
    def bad_init(worker_id):
        raise ValueError(f"cannot open the shard of worker {worker_id}")

    with pytest.raises(ValueError, match="worker process 0.*\n(?s:.*)cannot open the shard of worker 0"):
        list(DataLoader(list(range(4)), batch_size=2, num_workers=1, worker_init_fn=bad_init))
    with pytest.raises(Exception, match="Caught .* in DataLoader worker process 0"):
        list(DataLoader(list(range(4)), batch_size=2, num_workers=1, collate_fn=lambda b: lambda: b))


def test_a_killed_worker_raises_naming_it_and_the_others_are_stopped():
    it, workers = new_workers(lambda: iter(DataLoader(Failing(2, kill_self), batch_size=2, num_workers=2)))
    start = time.monotonic()
    with pytest.raises(
        DataLoaderError, match=r"worker process 1 \(pid \d+\) exited unexpectedly \(killed by signal SIGKILL\)"
    ):
        list(it)
    assert time.monotonic() - start < 30  # raised, not hung (without a timeout a lost batch is waited for forever)
    assert_gone(workers)
    with pytest.raises(RuntimeError, match="worker process 1"):  # the iterator stays failed
        next(it)
    persistent = DataLoader(Failing(2, kill_self), batch_size=2, num_workers=2, persistent_workers=True)
    for _ in range(2):  # and so do persistent workers, in the next epoch too
        with pytest.raises(DataLoaderError, match="worker process 1 .*exited unexpectedly"):
            list(persistent)


def test_a_timeout_raises_and_a_dropped_iterator_stops_its_workers():
    it, workers = new_workers(lambda: iter(DataLoader(Failing(0, sleep), batch_size=2, num_workers=1, timeout=0.2)))
    with pytest.raises(DataLoaderError, match="DataLoader timed out after 0.2 seconds"):
        next(it)
    del it
    assert_gone(workers)


def test_an_iterator_dropped_mid_epoch_and_a_deleted_persistent_loader_leave_no_worker():
    it, workers = new_workers(lambda: iter(DataLoader(list(range(40)), batch_size=2, num_workers=2)))
    assert next(it).tolist() == [0, 1]
    del it
    assert_gone(workers)
    loader = DataLoader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True)
    batches, workers = new_workers(functools.partial(list, loader))
    assert len(batches) == 4 and all(w.is_alive() for w in workers)  # kept for the next epoch
    del loader
    assert_gone(workers)


class Big(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return np.zeros(100_000)  # a batch larger than a pipe's buffer: its worker blocks sending it


def test_workers_blocked_sending_big_batches_stop_by_themselves_when_the_iterator_is_dropped():
    """Not terminated after a grace period: closing the main process's end of a result pipe breaks the
    worker's blocked send, since the worker closed its forked copy of that end."""
    it, workers = new_workers(lambda: iter(DataLoader(Big(), batch_size=2, num_workers=2)))
    assert next(it).shape == (2, 100_000)
    time.sleep(0.3)  # the workers fill their pipes with prefetched batches
    del it
    assert_gone(workers)
    assert [w.exitcode for w in workers] == [0, 0]


def test_get_worker_info_is_none_in_the_main_process():
    assert get_worker_info() is None


ORPHANING = """
import multiprocessing, os, signal, time
from distgraph.data import DataLoader

def slow_start(worker_id):
    time.sleep(0.5)  # the main process is gone before this worker serves its first task

it = iter(DataLoader(list(range(40)), batch_size=2, num_workers=2, worker_init_fn=slow_start))
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_exit_by_themselves_when_the_main_process_is_killed_even_before_they_start_serving():
    """A worker compares its parent pid with the main process's pid it was given, not with the parent
    it finds when it starts (already init's, when the main process died first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    main = subprocess.Popen([sys.executable, "-c", ORPHANING], stdout=subprocess.PIPE, env=env, text=True)
    pids = [int(p) for p in main.stdout.readline().split()]
    main.wait(60)
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if _running(p)]
    for pid in left:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    main.stdout.close()
    assert not left, f"orphaned workers {left} still run"


def _running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
