"""Uneven inputs: torch's `Join` context manager (torch.distributed.algorithms.Join).

    with model.join():              # or Join([model]) for any Joinable
        for x, y in my_batches:     # ranks may have different numbers of batches
            loss_fn(model(x), y).backward(); opt.step()

Without it a rank that runs out of batches leaves its peers waiting in an all-reduce it never joins.
Protocol, as torch's: every iteration of a rank still training starts (in the first joinable's forward)
with an all-reduce of a 1 — `notify_join_context`. A rank that has left its loop reaches `__exit__` and
loops instead: it all-reduces a 0, which tells it how many ranks are still training; none: done;
otherwise every joinable's `main_hook()` shadows the collectives of one iteration of theirs (DDP: the
flag saying whether their backward reduces (no_sync), the buffer broadcast — from the highest rank still
training, as torch's, since rank 0 may have joined with stale buffers — and the gradient buckets, with
zeros). Once all have joined, every `post_hook(is_last_joiner)` runs (DDP: every rank takes the parameters
and buffers of the last rank to join, the only one that stepped through every iteration). Each iteration
inside must run the same collectives on every rank still in it (for DDP: each forward followed by one
backward, synced or under no_sync, all ranks in the same train/eval mode).

`throw_on_early_termination=True`: as soon as one rank has joined, every rank raises (the ones still
training from their next forward), instead of shadowing. `enable=False`: the context does nothing.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.distributed import loop
from distgraph.errors import ConfigError, DistributedError

_EARLY = "Detected at least one rank that exhausted inputs. Throwing across all ranks."


class JoinHook:
    """What a joined rank does for a joinable: `main_hook()` once per iteration the others still run,
    `post_hook(is_last_joiner)` once all have joined."""

    def main_hook(self):
        pass

    def post_hook(self, is_last_joiner):
        pass


class Joinable:
    """A class whose per-iteration collectives a joined rank can shadow: `join_hook(**kwargs)` → JoinHook;
    its forward (or its iteration's first collective) calls `Join.notify_join_context(self)`. (torch's also
    names a device and a process group: here they are the launch's.)"""

    def join_hook(self, **kwargs):
        raise NotImplementedError


class Join:
    def __init__(self, joinables, enable=True, throw_on_early_termination=False, **kwargs):
        if len(joinables) == 0:
            raise ConfigError("Join: the join context manager requires at least one joinable")
        for j in joinables:
            if not isinstance(j, Joinable):
                raise ConfigError(f"Join: {type(j).__name__} is not a Joinable")
        self._joinables, self._enable, self._throw = list(joinables), enable, throw_on_early_termination
        self._hooks = [j.join_hook(**kwargs) for j in self._joinables]

    def __enter__(self):
        for i, j in enumerate(self._joinables):
            j._join_config = {"enable": self._enable, "throw": self._throw, "first": i == 0}
        return self

    def __exit__(self, kind, value, traceback):
        try:
            if not self._enable or kind is not None:
                return False
            is_last_joiner = True
            while (training := count_ranks(0)) > 0:
                if self._throw:
                    raise DistributedError(f"Join: {_EARLY}")
                is_last_joiner = False
                for j in self._joinables:  # (DDP's hook scales the mean to them, as the training ranks do)
                    j._join_config["training"] = training
                for hook in self._hooks:
                    hook.main_hook()
            for hook in self._hooks:
                hook.post_hook(is_last_joiner)
            return False
        finally:
            for j in self._joinables:
                j._join_config = None

    @staticmethod
    def notify_join_context(joinable):
        """Called at the start of each iteration of a rank still training → how many ranks are (None
        outside an enabled Join, and for any but its first joinable, whose call is the one all-reduce)."""
        config = getattr(joinable, "_join_config", None)
        if not config or not config["enable"] or not config["first"]:
            return None
        n = count_ranks(1)
        if config["throw"] and n < loop.world_size():
            raise DistributedError(f"Join: {_EARLY}")
        return n


def _on_device(array):
    return Tensor(to_device(array, loop._context["device"]))  # (NCCL reduces GPU arrays only)


def count_ranks(flag):
    """How many ranks' `flag` is true (one all-reduce)."""
    total = loop.all_reduce(_on_device(np.array([int(flag)], np.int64)), "sum")
    return int(total.item())


def highest_rank_with(flag):
    """The highest rank whose `flag` is true (torch's _find_common_rank): the last joiner whose parameters
    every rank takes, the rank still training whose buffers are broadcast (one all-reduce)."""
    flags = np.zeros(loop.world_size(), np.int64)
    flags[loop.rank()] = int(flag)
    flags = loop.all_reduce(_on_device(flags), "sum").tolist()
    return max(r for r, f in enumerate(flags) if f)
