"""Timeline of an execution, written as Chrome-trace JSON (opens in Perfetto and chrome://tracing).

Each event is one subgraph run: its name, the thread (or worker) that ran it, start and end, and the
bytes it read and wrote. Times are kept in seconds from `time.perf_counter` and written in µs
relative to the first event, as complete ("X") events.
"""

import json
import os
import threading
import time


class Timeline:
    def __init__(self):
        self.events = []  # (name, worker, start, end, bytes, args)
        self._lock = threading.Lock()

    def record(self, name, worker, start, end, nbytes=0, **args):
        with self._lock:
            self.events.append((name, worker, start, end, nbytes, args))

    def span(self, name, worker=None, nbytes=0, **args):
        """Context manager recording one event around a block."""
        return _Span(self, name, worker or threading.current_thread().name, nbytes, args)

    def to_chrome(self):
        t0 = min((e[2] for e in self.events), default=0.0)
        workers = sorted({e[1] for e in self.events})
        tids = {w: i for i, w in enumerate(workers)}
        events = [
            {"name": "thread_name", "ph": "M", "pid": os.getpid(), "tid": tids[w], "args": {"name": w}} for w in workers
        ]
        for name, worker, start, end, nbytes, args in self.events:
            events.append(
                {
                    "name": name,
                    "cat": "subgraph",
                    "ph": "X",
                    "ts": (start - t0) * 1e6,
                    "dur": (end - start) * 1e6,
                    "pid": os.getpid(),
                    "tid": tids[worker],
                    "args": {"bytes": nbytes, **args},
                }
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write(self, path):
        """Write the Chrome trace to `path` (its folder made as needed); returns the path."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_chrome(), f)
        return path

    @property
    def wall(self):
        """Seconds from the first start to the last end."""
        if not self.events:
            return 0.0
        return max(e[3] for e in self.events) - min(e[2] for e in self.events)


class _Span:
    def __init__(self, timeline, name, worker, nbytes, args):
        self.timeline, self.name, self.worker, self.nbytes, self.args = timeline, name, worker, nbytes, args

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timeline.record(self.name, self.worker, self.start, time.perf_counter(), self.nbytes, **self.args)
