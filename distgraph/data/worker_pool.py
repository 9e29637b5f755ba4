"""The main-process side of a DataLoader with num_workers > 0: torch's multi-process iterator.

Policy (torch's `_MultiProcessingDataLoaderIter`):
- The main process draws the index batches from the sampler and hands them out round-robin, keeping
  `prefetch_factor * num_workers` tasks outstanding; each worker builds the whole batch (fetch and
  collate) and sends it back. Results are returned in task order (`in_order=True`), held back when
  they arrive early; with `in_order=False` as they arrive.
- An iterable dataset is copied to every worker and the "index" is just the batch size. A worker whose
  copy is used up is marked inactive and its pending tasks are skipped; the epoch ends when no task is
  left.
- A worker's exception is re-raised here with its id and traceback (`WorkerException.reraise`); a
  worker that dies (its result pipe reaches EOF) or a result that does not come within `timeout`
  seconds raises DataLoaderError. A dead worker shuts the others down: the epoch cannot complete.
- Workers stop when the epoch is exhausted (unless persistent_workers), when the iterator is garbage
  collected, or on a dead worker. Persistent workers are told to start a new epoch (`_reset`).

Each worker has two one-way pipes (tasks in, results out); `multiprocessing.connection.wait` on the
result pipes notices a result and a dead worker alike, without polling.
"""

import itertools
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait

from distgraph.data.dataset import IterableDataset
from distgraph.data.worker import RESUME, IterableEnd, WorkerException, worker_loop
from distgraph.errors import DataLoaderError

_JOIN_S = 2.0  # how long a stopping worker may take before it is terminated


def base_seed(generator):
    """The workers' base seed, drawn per iterator from the loader's numpy Generator (or distgraph's global
    one), as torch draws it from the loader's generator. It comes from a child stream
    (`Generator.spawn`), so the sampler's draws, hence the batch order, are those of num_workers=0."""
    try:
        child = generator.spawn(1)[0]
    except (AttributeError, TypeError):  # a bit generator without a SeedSequence: draw from it directly
        child = generator
    return int(child.integers(0, 2**63))


class MultiProcessIter:
    """One pass (or, with persistent workers, every pass) of a DataLoader over worker processes."""

    def __init__(self, loader, generator):
        self._num_workers, self._prefetch = loader.num_workers, loader.prefetch_factor
        self._in_order, self._timeout, self._persistent = loader.in_order, loader.timeout, loader.persistent_workers
        self._iterable = isinstance(loader.dataset, IterableDataset)
        self._workers, self._tasks, self._results = [], [], []
        self._shutdown, self._failure = False, None
        ctx = loader.multiprocessing_context or multiprocessing.get_context()
        fetch_options = (loader.auto_collation, loader.collate_fn, loader.drop_last, loader.uses_default_collate)
        seed = base_seed(generator)
        try:
            for wid in range(self._num_workers):
                self._start(ctx, loader.dataset, fetch_options, seed, loader.worker_init_fn, wid)
        except BaseException:
            self._shutdown_workers()
            raise
        self._reset(loader, first=True)

    def _start(self, ctx, dataset, fetch_options, seed, init_fn, wid):
        task_out, task_in = ctx.Pipe(duplex=False)
        result_out, result_in = ctx.Pipe(duplex=False)
        pipes = (task_out, result_in, (task_in, result_out))
        args = (dataset, fetch_options, seed, init_fn, wid, self._num_workers, pipes, os.getpid())
        worker = ctx.Process(target=worker_loop, args=args, name=f"DataLoader worker {wid}", daemon=True)
        self._tasks.append(task_in)
        self._results.append(result_out)
        try:
            worker.start()
        finally:  # the worker's ends belong to it: a dead worker is then an EOF on its result pipe
            task_out.close()
            result_in.close()
        self._workers.append(worker)

    def _reset(self, loader, first=False):
        """Start an epoch: a fresh sampler pass, the task bookkeeping, and the first prefetched tasks."""
        if self._failure is not None:  # persistent workers that died stay dead
            raise DataLoaderError(self._failure)
        self._index_sampler = loader.index_sampler()
        self._sampler_iter = iter(self._index_sampler)
        self._send_idx = self._rcvd_idx = 0
        self._task_info = {}  # idx -> (worker,) while pending, (worker, data) once arrived early
        self._active = [True] * self._num_workers
        self._num_tasks = [0] * self._num_workers
        self._cycle = itertools.cycle(range(self._num_workers))
        if not first:
            for wid in range(self._num_workers):
                self._send(wid, RESUME)
            acks = self._num_workers
            while acks:  # what the workers still send of the last, unfinished epoch is dropped
                acks -= self._get_data()[0] == RESUME
        for _ in range(self._prefetch * self._num_workers):
            self._try_put_index()

    def __iter__(self):
        return self

    def __len__(self):
        """The number of batches of a pass, as torch's iterator (len(iter(loader)) == len(loader))."""
        return len(self._index_sampler)

    def __next__(self):
        if self._failure is not None:
            raise DataLoaderError(self._failure)
        while True:
            while self._rcvd_idx < self._send_idx:  # skip tasks of workers whose iterable is used up
                info = self._task_info.get(self._rcvd_idx)
                if info is not None and (len(info) == 2 or self._active[info[0]]):
                    break
                self._task_info.pop(self._rcvd_idx, None)
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            if len(self._task_info[self._rcvd_idx]) == 2:
                wid, data = self._task_info.pop(self._rcvd_idx)
                self._rcvd_idx += 1
                return self._process(data, wid)
            idx, data = self._get_data()
            if isinstance(data, IterableEnd):
                self._active[data.worker_id] = False
                if not self._persistent:
                    self._send(data.worker_id, None)
                self._try_put_index()
                continue
            if idx == self._rcvd_idx or not self._in_order:
                wid = self._task_info.pop(idx)[0]
                self._rcvd_idx += idx == self._rcvd_idx
                return self._process(data, wid)
            self._task_info[idx] += (data,)

    def _try_put_index(self):
        """Send the sampler's next index to the next active worker (torch's round-robin choice)."""
        try:
            index = next(self._sampler_iter)
        except StopIteration:
            return
        max_tasks = self._prefetch * self._num_workers
        for _ in range(self._num_workers):
            wid = next(self._cycle)
            if self._active[wid] and (self._in_order or self._num_tasks[wid] < max_tasks // sum(self._active)):
                break
        else:
            return
        self._send(wid, (self._send_idx, index))
        self._task_info[self._send_idx] = (wid,)
        self._num_tasks[wid] += 1
        self._send_idx += 1

    def _process(self, data, wid):
        self._num_tasks[wid] -= 1
        self._try_put_index()
        if isinstance(data, WorkerException):
            data.reraise()
        return data

    def _send(self, wid, message):
        try:
            self._tasks[wid].send(message)
        except OSError:
            self._died(wid)

    def _get_data(self):
        """The next (idx, data) any active worker sends; DataLoaderError on a dead worker or a timeout."""
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DataLoaderError(f"DataLoader timed out after {self._timeout} seconds")
            active = [self._results[w] for w in range(self._num_workers) if self._active[w]]
            ready = wait(active, left)
            if ready:
                conn = ready[0]
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    self._died(self._results.index(conn))

    def _died(self, wid):
        worker = self._workers[wid]
        worker.join(_JOIN_S)
        code = worker.exitcode
        how = "still running" if code is None else f"exit code {code}"
        if code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        self._failure = f"DataLoader worker process {wid} (pid {worker.pid}) exited unexpectedly ({how})"
        self._shutdown_workers()
        raise DataLoaderError(self._failure)

    def _shutdown_workers(self):
        """Stop every worker: ask, close the pipes (a worker blocked sending sees a broken pipe), wait a
        little, then terminate what is left. Safe to call twice."""
        if self._shutdown:
            return
        self._shutdown = True
        for conn in self._tasks:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for conn in self._results:
            conn.close()
        deadline = time.monotonic() + _JOIN_S
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(_JOIN_S)

    def __del__(self):
        self._shutdown_workers()
