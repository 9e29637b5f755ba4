"""torch.distributed.pipelining's manual pipeline inside a `dg.distributed.launch`: one stage per rank, its
micro-batches' activations and gradients passed between neighbours with point-to-point messages (p2p.py).

    stage = PipelineStage(my_part_of_the_model, stage_index=dist.get_rank(), num_stages=dist.get_world_size())
    schedule = Schedule1F1B(stage, n_microbatches=4, loss_fn=F.cross_entropy)   # or ScheduleGPipe
    if stage.is_first:
        schedule.step(x)                                   # the batch, cut into micro-batches along dim 0
    elif stage.is_last:
        losses = []
        out = schedule.step(target=y, losses=losses)      # the outputs joined; each micro-batch's loss
    else:
        schedule.step()
    optimizer.step()                                       # each stage steps its own part

As torch's: the gradients accumulate in the stage's parameters like any backward's, and with `scale_grads=True`
each stage divides its parameters' gradients by the count of micro-batches once they are all in — the mean of
their losses' gradients (a gradient left from an earlier step without zero_grad is divided too, as torch's).
Without a `loss_fn` a step runs the forward alone, recording no graph. GPipe runs every forward, then every
backward; 1F1B starts `num_stages - 1 - stage_index` forwards ahead, then alternates, so a stage holds at most
that many more micro-batches' activations. Each message is preceded by a small header (dtype, whether it
requires grad, shape), so a stage need not be told its input's shape, and a gradient goes back only for an
activation that required one (an integer activation, or the output of a stage that requires no grad — a frozen
first stage's — gets none). Messages never wait for their receiver on one node (p2p.py), so neither order can deadlock there;
across nodes (gloo) a send waits, and 1F1B — whose neighbours may both be sending at once — is refused there by
name. Stages hand over single tensors (a tuple is refused by name). `device`, `input_args` and `output_args`
are taken and unused: a stage runs where its module's parameters are and learns its input from the header.

Several stages a rank (torch's PipelineScheduleMulti): `num_stages` a multiple of the group's size W, stage s
on the group's rank s % W (torch's looped assignment), each rank's stages handed together to
`ScheduleLoopedBFS` or `ScheduleInterleaved1F1B`. A group of one rank (outside a launch, or `dist.new_group` of
one rank) holds every stage; a stage then hands over to the next in-process, no message sent (as torch's
set_local_fwd_input). The four schedules are in pipelining_schedules.py, exported here.
"""

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, to_device
from distgraph.distributed import loop, p2p
from distgraph.errors import ConfigError, DTypeError, ShapeError

_HEADER = 11  # int64s: dtype code, requires grad, ndim, then the shape (8 dims at most)
_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")

__all__ = ["PipelineStage", "Schedule1F1B", "ScheduleGPipe", "ScheduleInterleaved1F1B", "ScheduleLoopedBFS"]  # noqa: F822 (__getattr__)
_SCHEDULES = __all__[1:]  # pipelining_schedules.py (which imports this module: loaded on first use)


class PipelineStage:
    """This rank's stage: `submodule` as stage `stage_index` of `num_stages` (a multiple of the size W of `group`,
    the launch's by default), stage s on the group's rank s % W."""

    def __init__(self, submodule, stage_index, num_stages, device=None, input_args=None, output_args=None,
                 group=None, dw_builder=None):  # fmt: skip
        from distgraph.distributed.process_group import _check_group

        sub = _check_group(group, "PipelineStage", subgroups=True)
        ranks = list(range(loop.world_size())) if sub is None else list(sub.ranks)
        me = loop.rank()
        world = len(ranks)
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
            raise ConfigError(f"PipelineStage: num_stages must be a positive int, got {num_stages!r}")
        if num_stages % world:
            raise ConfigError(
                f"PipelineStage: num_stages={num_stages} is not a multiple of the group's {world} ranks (stage s runs "
                f"on the group's rank s % {world}, every rank holding as many)"
            )
        if isinstance(stage_index, bool) or not isinstance(stage_index, int) or not 0 <= stage_index < num_stages:
            raise ConfigError(f"PipelineStage: stage_index={stage_index!r} is not one of the {num_stages} stages")
        if me not in ranks or ranks.index(me) != stage_index % world:
            raise ConfigError(
                f"PipelineStage: stage_index={stage_index} is not this rank's place ({ranks.index(me) if me in ranks else 'none'}) "
                f"in the group {ranks}: stage s runs on the group's (s % {world})-th rank"
            )
        if dw_builder is not None:
            raise ConfigError("PipelineStage: dw_builder (zero-bubble schedules) is not supported")
        self.submod, self.stage_index, self.num_stages, self._ranks = submodule, stage_index, num_stages, ranks

    @property
    def is_first(self):
        return self.stage_index == 0

    @property
    def is_last(self):
        return self.stage_index == self.num_stages - 1

    def _check(self, tensor):
        """`tensor`'s dtype name; refused by name unless it is one tensor that a message carries (the same rules
        where the next stage is on this rank: a pipeline that runs on one rank runs on several)."""
        if not isinstance(tensor, Tensor):
            raise ConfigError(
                f"PipelineStage {self.stage_index}: a stage hands over one tensor, got {type(tensor).__name__}"
            )
        dtype = str(tensor.array.dtype)
        if dtype not in _DTYPES:
            raise DTypeError(
                f"PipelineStage {self.stage_index}: cannot send a {dtype} tensor (it sends {', '.join(_DTYPES)})"
            )
        if tensor.ndim > _HEADER - 3:
            raise ShapeError(
                f"PipelineStage {self.stage_index}: cannot send a tensor of {tensor.ndim} dims (8 at most)"
            )
        return dtype

    def _send(self, tensor, stage, tag):
        """`tensor` (a single one, detached) to `stage` (as p2p `tag`), after a header saying its dtype, grad and
        shape."""
        dtype = self._check(tensor)
        header = np.zeros(_HEADER, np.int64)
        header[:3] = _DTYPES.index(dtype), bool(tensor.requires_grad), tensor.ndim
        header[3 : 3 + tensor.ndim] = tensor.shape
        # (on the tensor's device: NCCL, a GPU launch's transport, sends device arrays only)
        dst = self._ranks[stage % len(self._ranks)]
        p2p.send(Tensor(to_device(header, tensor.device), device=tensor.device), dst, tag=tag)
        p2p.send(tensor.detach(), dst, tag=tag)

    def _recv(self, stage, device, tag):
        """The next tensor `stage` sends this one (as `tag`; its header first), requiring grad where the sent one
        did."""
        src = self._ranks[stage % len(self._ranks)]
        header = Tensor(device.xp.zeros(_HEADER, np.int64), device=device)
        p2p.recv(header, src, tag=tag)
        values = to_device(header.array, CPU)
        code, grad, ndim = (int(v) for v in values[:3])
        shape = tuple(int(v) for v in values[3 : 3 + ndim])
        out = Tensor(device.xp.zeros(shape, _DTYPES[code]), device=device)
        p2p.recv(out, src, tag=tag)
        return out.requires_grad_(True) if grad else out


def _chunks(tensor, n, what):
    """`tensor` cut into `n` micro-batches along dim 0 (torch's tensor_split: the first ones one row longer)."""
    if not isinstance(tensor, Tensor) or tensor.ndim == 0 or tensor.shape[0] < n:
        raise ShapeError(f"pipeline step: {what} must be a tensor of at least {n} rows (n_microbatches), got "
                         f"{tuple(getattr(tensor, 'shape', ())) or type(tensor).__name__}")  # fmt: skip
    base, extra = divmod(tensor.shape[0], n)
    bounds = np.cumsum([0] + [base + (1 if i < extra else 0) for i in range(n)])
    return [tensor[int(a) : int(b)] for a, b in zip(bounds[:-1], bounds[1:])]


def _device(module):
    first = next(iter(module.parameters()), None)
    return CPU if first is None else first.device


def __getattr__(name):
    """The schedules, from pipelining_schedules.py (imported on first use: it imports this module)."""
    if name in _SCHEDULES:
        from distgraph.distributed import pipelining_schedules

        return getattr(pipelining_schedules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
