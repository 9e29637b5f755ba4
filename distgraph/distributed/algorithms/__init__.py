"""torch.distributed.algorithms' counterparts: `Join` / `Joinable` / `JoinHook` (uneven inputs, join.py)
and DDP communication hooks (`ddp_comm_hooks.default_hooks`)."""

from distgraph.distributed.algorithms import ddp_comm_hooks
from distgraph.distributed.algorithms.join import Join, Joinable, JoinHook

__all__ = ["Join", "JoinHook", "Joinable", "ddp_comm_hooks"]
