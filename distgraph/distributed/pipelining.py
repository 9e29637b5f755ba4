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
"""

import contextlib

import numpy as np

from distgraph.autograd.grad_mode import no_grad
from distgraph.autograd.tensor import Tensor
from distgraph.backend import CPU, to_device
from distgraph.distributed import loop, p2p
from distgraph.errors import ConfigError, DTypeError, ShapeError
from distgraph.ops.shape import cat

_HEADER = 11  # int64s: dtype code, requires grad, ndim, then the shape (8 dims at most)
_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")

__all__ = ["PipelineStage", "Schedule1F1B", "ScheduleGPipe"]


class PipelineStage:
    """This rank's stage: `submodule` as stage `stage_index` of `num_stages`, one per rank of `group`'s (the
    launch's by default) in order."""

    def __init__(self, submodule, stage_index, num_stages, device=None, input_args=None, output_args=None,
                 group=None, dw_builder=None):  # fmt: skip
        from distgraph.distributed.process_group import _check_group

        sub = _check_group(group, "PipelineStage", subgroups=True)
        ranks = list(range(loop.world_size())) if sub is None else list(sub.ranks)
        me = loop.rank()
        if num_stages != len(ranks):
            raise ConfigError(
                f"PipelineStage: num_stages={num_stages}, but the group has {len(ranks)} ranks (one stage each)"
            )
        if me not in ranks or ranks.index(me) != stage_index:
            raise ConfigError(
                f"PipelineStage: stage_index={stage_index} is not this rank's place ({ranks.index(me) if me in ranks else 'none'}) "
                f"in the group {ranks}: stage s runs on the group's s-th rank"
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

    def _send(self, tensor, stage):
        """`tensor` (a single one, detached) to `stage`, after a header saying its dtype, grad and shape."""
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
        header = np.zeros(_HEADER, np.int64)
        header[:3] = _DTYPES.index(dtype), bool(tensor.requires_grad), tensor.ndim
        header[3 : 3 + tensor.ndim] = tensor.shape
        # (on the tensor's device: NCCL, a GPU launch's transport, sends device arrays only)
        p2p.send(Tensor(to_device(header, tensor.device), device=tensor.device), self._ranks[stage])
        p2p.send(tensor.detach(), self._ranks[stage])

    def _recv(self, stage, device):
        """The next tensor `stage` sends this one (its header first), requiring grad where the sent one did."""
        header = Tensor(device.xp.zeros(_HEADER, np.int64), device=device)
        p2p.recv(header, self._ranks[stage])
        values = to_device(header.array, CPU)
        code, grad, ndim = (int(v) for v in values[:3])
        shape = tuple(int(v) for v in values[3 : 3 + ndim])
        out = Tensor(device.xp.zeros(shape, _DTYPES[code]), device=device)
        p2p.recv(out, self._ranks[stage])
        return out.requires_grad_(True) if grad else out


class _PipelineSchedule:
    """A single-stage-per-rank schedule (torch's PipelineScheduleSingle); subclasses give the order."""

    def __init__(self, stage, n_microbatches, loss_fn=None, output_merge_spec=None, scale_grads=True):
        if not isinstance(stage, PipelineStage):
            raise ConfigError(f"{type(self).__name__}: stage must be a PipelineStage, got {type(stage).__name__}")
        if isinstance(n_microbatches, bool) or not isinstance(n_microbatches, int) or n_microbatches < 1:
            raise ConfigError(f"{type(self).__name__}: n_microbatches must be a positive int, got {n_microbatches!r}")
        if output_merge_spec is not None:
            raise ConfigError(f"{type(self).__name__}: output_merge_spec is not supported (outputs join along dim 0)")
        self.stage, self.n, self.loss_fn, self.scale_grads = stage, n_microbatches, loss_fn, scale_grads

    def _order(self):
        raise NotImplementedError

    def _run(self, inputs, targets, training):
        """This stage's forwards (and, training, backwards) in the schedule's order → (outputs, losses): the last
        stage's."""
        stage = self.stage
        kept, outputs, micro_losses = {}, [], []
        for action, i in self._order() if training else [("F", i) for i in range(self.n)]:
            if action == "F":
                x = inputs[i] if stage.is_first else stage._recv(stage.stage_index - 1, _device(stage.submod))
                y = stage.submod(x)
                if stage.is_last:
                    outputs.append(y.detach())
                    if training:
                        y = self.loss_fn(y, targets[i])
                        micro_losses.append(y)
                else:
                    stage._send(y, stage.stage_index + 1)
                if training:  # (kept for its backward)
                    kept[i] = (x, y)
            else:
                x, y = kept.pop(i)
                if stage.is_last:
                    y.backward()
                elif y.requires_grad:  # (else the next stage sends none back: its input needed none)
                    y.backward(stage._recv(stage.stage_index + 1, y.device))
                if not stage.is_first and x.requires_grad:  # the previous stage waits for it
                    stage._send(x.grad if x.grad is not None else x.detach() * 0, stage.stage_index - 1)
        return outputs, micro_losses

    def step(self, *args, target=None, losses=None, **kwargs):
        """One batch through the pipeline (see the module doc) → on the last stage, the outputs joined along
        dim 0; elsewhere None."""
        stage, n = self.stage, self.n
        if kwargs or (args and not stage.is_first) or (not args and stage.is_first) or len(args) > 1:
            raise ConfigError(
                f"{type(self).__name__}.step: stage {stage.stage_index} takes "
                + ("one input tensor (the batch)" if stage.is_first else "no input (it receives its stage's)")
            )
        if (target is not None) != (stage.is_last and self.loss_fn is not None):
            raise ConfigError(
                f"{type(self).__name__}.step: target= goes to the last stage, and only with a loss_fn "
                f"(stage {stage.stage_index} of {stage.num_stages}, loss_fn {'given' if self.loss_fn else 'None'})"
            )
        inputs = _chunks(args[0], n, "the batch") if stage.is_first else None
        targets = _chunks(target, n, "target") if target is not None else None
        training = self.loss_fn is not None
        with contextlib.nullcontext() if training else no_grad():
            outputs, micro_losses = self._run(inputs, targets, training)
        if training and self.scale_grads:  # (torch's: every gradient in, then each divided by the count)
            with no_grad():
                for p in stage.submod.parameters():
                    if p.grad is not None:
                        p.grad.div_(n)
        if losses is not None and stage.is_last:
            losses.extend(loss.detach() for loss in micro_losses)
        return cat(outputs, dim=0) if stage.is_last else None


class ScheduleGPipe(_PipelineSchedule):
    """Every micro-batch's forward, then every backward."""

    def _order(self):
        return [("F", i) for i in range(self.n)] + [("B", i) for i in range(self.n)]


class Schedule1F1B(_PipelineSchedule):
    """`num_stages - 1 - stage_index` forwards ahead, then one forward and one backward in turn, then the rest of
    the backwards: a stage holds fewer micro-batches' activations than under GPipe."""

    def __init__(self, stage, n_microbatches, loss_fn=None, output_merge_spec=None, scale_grads=True):
        super().__init__(stage, n_microbatches, loss_fn, output_merge_spec, scale_grads)
        if p2p._collective() is not None:  # (its sends wait for their receiver: neighbours sending at once hang)
            raise ConfigError(
                "Schedule1F1B: the launch's ranks meet over gloo / NCCL, whose sends wait for their receiver; use "
                "ScheduleGPipe there (1F1B needs the one-node transport)"
            )

    def _order(self):
        ahead = min(self.n, self.stage.num_stages - 1 - self.stage.stage_index)
        order = [("F", i) for i in range(ahead)]
        for i in range(self.n - ahead):
            order += [("F", ahead + i), ("B", i)]
        return order + [("B", i) for i in range(self.n - ahead, self.n)]


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
