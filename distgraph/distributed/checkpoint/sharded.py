"""ShardedTensor: one tensor of a sharded state dict, of which each rank holds some pieces.

What FSDP's SHARDED_STATE_DICT gives for a parameter (and its optimizer state): the global shape and dtype
and this rank's pieces, each a run of the tensor's elements in flattened (C) order — `(offset, 1-d Tensor)`.
torch gives a DTensor sharded by rows there; distgraph's flat shards (fsdp_flat.py) cut a parameter at any
element, so a piece is a run of elements, which also lets `dcp.load` fill any other world size's pieces from
a checkpoint (its chunks are runs of elements too). `dcp.save` writes each rank's pieces, `dcp.load` fills
them in place; `full_tensor()` (a collective, as DTensor's) gathers the whole.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import to_device
from distgraph.errors import DTypeError, ShapeError


class ShardedTensor:
    def __init__(self, shape, dtype, pieces):
        """`pieces`: [(offset, 1-d Tensor)] — this rank's runs of the flattened tensor (none: it holds none)."""
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.pieces = [(int(offset), t) for offset, t in pieces]
        numel = self.numel()
        for offset, t in self.pieces:
            if np.dtype(str(t.array.dtype)) != self.dtype:
                raise DTypeError(f"ShardedTensor: a piece of dtype {t.array.dtype} in a tensor of dtype {self.dtype}")
            if t.ndim != 1 or not 0 <= offset <= offset + t.shape[0] <= numel:
                raise ShapeError(
                    f"ShardedTensor: a piece of shape {tuple(t.shape)} at offset {offset} does not lie in the "
                    f"{numel} elements of shape {self.shape} (pieces are 1-d runs of the flattened tensor)"
                )

    def numel(self):
        return int(np.prod(self.shape))

    def size(self):
        return self.shape

    def to_local(self):
        """This rank's pieces end to end (1-d; empty where it holds none)."""
        if not self.pieces:
            return Tensor(np.empty(0, self.dtype))
        xp = self.pieces[0][1].device.xp
        return Tensor(xp.concatenate([t.array for _, t in self.pieces]), device=self.pieces[0][1].device)

    def full_tensor(self):
        """The whole tensor from every rank's pieces, on every rank (a collective inside a launch)."""
        from distgraph.distributed import loop

        mine = [(offset, to_device(t.array, "cpu")) for offset, t in self.pieces]
        full = np.zeros(self.numel(), self.dtype)
        covered = np.zeros(self.numel(), bool)
        for pieces in loop.allgather_object(mine):
            for offset, array in pieces:
                full[offset : offset + array.shape[0]] = array
                covered[offset : offset + array.shape[0]] = True
        if not covered.all():
            raise ShapeError(
                f"ShardedTensor.full_tensor: the ranks' pieces leave {int((~covered).sum())} of the {self.numel()} "
                f"elements of shape {self.shape} uncovered"
            )
        return Tensor(full.reshape(self.shape))

    def __repr__(self):
        held = sum(t.shape[0] for _, t in self.pieces)
        return (
            f"ShardedTensor(shape={self.shape}, dtype={self.dtype}, {len(self.pieces)} piece(s), {held} elements here)"
        )
