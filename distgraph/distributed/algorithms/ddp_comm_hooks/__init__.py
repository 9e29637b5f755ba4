"""DDP communication hooks, as torch's `torch.distributed.algorithms.ddp_comm_hooks`: `default_hooks`."""

from distgraph.distributed.algorithms.ddp_comm_hooks import default_hooks

__all__ = ["default_hooks"]
