"""torch.utils counterparts: activation checkpointing (`distgraph.utils.checkpoint`)."""

from distgraph.utils import checkpoint  # noqa: F401
