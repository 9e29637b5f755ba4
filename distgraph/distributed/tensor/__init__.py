"""torch.distributed.tensor's placements, as tensor parallelism's plans name them (tensor/parallel.py):
`Shard(dim)` — each rank holds a slice along `dim` — and `Replicate()` — each rank holds the whole. distgraph has
no DTensor: a parallelized module's parameters and outputs are this rank's plain local tensors."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    dim: int


@dataclass(frozen=True)
class Replicate:
    pass


__all__ = ["Replicate", "Shard"]
