"""torch.distributed.optim: `ZeroRedundancyOptimizer` (zero_redundancy.py)."""

from distgraph.distributed.optim.zero_redundancy import ZeroRedundancyOptimizer

__all__ = ["ZeroRedundancyOptimizer"]
