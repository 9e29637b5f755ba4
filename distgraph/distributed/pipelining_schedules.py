"""torch.distributed.pipelining's schedules, on one engine: the single-stage `ScheduleGPipe` and `Schedule1F1B`
(torch's PipelineScheduleSingle) and the several-stages-a-rank `ScheduleLoopedBFS` and `ScheduleInterleaved1F1B`
(its PipelineScheduleMulti). pipelining.py, with `PipelineStage`, exports them all; its doc shows the one-stage
use. Several stages a rank:

    W, v = dist.get_world_size(), 2                    # v stages a rank, num_stages = W * v
    stages = [PipelineStage(parts[s], s, W * v) for s in range(dist.get_rank(), W * v, W)]   # stage s on rank s % W
    schedule = ScheduleInterleaved1F1B(stages, n_microbatches=2 * W, loss_fn=F.cross_entropy)
    if dist.get_rank() == 0:
        schedule.step(x)                               # the rank holding stage 0: the batch
    elif dist.get_rank() == W - 1:
        out = schedule.step(target=y, losses=losses)  # the rank holding the last stage: the outputs joined
    else:
        schedule.step()

A schedule is an order of (local stage, forward | backward, micro-batch) actions per rank; one engine runs any
of them (`_Schedule`), so the four differ only in their orders and in where they may run.
A rank holding both the first and the last stage takes both (`step(x, target=y, losses=losses)`). Each rank
hands every stage it holds (v = num_stages / W of them, in any order) at once — on a group of one rank, all of
them; a stage whose index is not this rank's is refused by PipelineStage, stages of different groups or counts
here.

Orders (per rank; each stage's micro-batches go 0, 1, 2, ... both ways, as the messages' FIFO order needs):
GPipe runs every forward, then every backward; 1F1B starts `num_stages - 1 - stage_index` forwards ahead, then
alternates, so a stage holds at most that many more micro-batches' activations. LoopedBFS runs, stage by stage in order, every micro-batch's forward, then stage by stage in reverse every
backward. Interleaved1F1B is torch's: rounds of W micro-batches (n_microbatches must be a multiple of W), the
k-th forward on local stage (k // W) % v, the k-th backward on local stage v - 1 - (k // W) % v;
min(n * v, (v - 1) * W + 2 * (W - 1 - rank)) forwards first, then one forward and one backward in turn while
forwards remain, then the remaining backwards — fewer activations alive at once than LoopedBFS's n * v.

Messages: the activation into stage s goes as p2p tag 2 * s, the gradient into stage s as tag 2 * s + 1, so each
(receiving stage, kind) is a FIFO channel of its own (p2p.py: the n-th message of a (src, dst, tag) meets its
n-th receive). Sends never wait for their receiver on one node, so every order whose receives can all be met
completes. Across nodes (gloo / NCCL) there are no tags (a pair's messages meet in call order) and sends wait for
their receiver: only GPipe runs there (each rank sends one way at a time); the others are refused by name, except
on a group of one rank. There (outside a launch, or a `dist.new_group` of one rank) the rank holds every stage and
a stage hands over to the next in-process, no message sent: the tensor, detached (an activation requiring grad
where it did), waits in a FIFO per (receiving stage, kind) — torch's set_local_fwd_input / set_local_bwd_input.
Without a loss_fn a step runs the forwards alone (in LoopedBFS's order), recording no graph.
"""

import collections
import contextlib

from distgraph.autograd.grad_mode import no_grad
from distgraph.distributed import p2p
from distgraph.distributed.pipelining import PipelineStage, _chunks, _device
from distgraph.errors import ConfigError
from distgraph.ops.shape import cat

__all__ = ["Schedule1F1B", "ScheduleGPipe", "ScheduleInterleaved1F1B", "ScheduleLoopedBFS"]

ACTIVATION, GRADIENT = 0, 1


def tag(stage_index, kind):
    """The p2p tag of the messages into stage `stage_index` of `kind` (ACTIVATION or GRADIENT)."""
    return 2 * stage_index + kind


def looped_bfs_order(v, n):
    """[(local stage, "F" | "B", micro-batch)]: every forward stage by stage, then every backward in reverse."""
    forwards = [(local, "F", i) for local in range(v) for i in range(n)]
    return forwards + [(local, "B", i) for local in reversed(range(v)) for i in range(n)]


def one_f_one_b_order(stage_index, num_stages, n):
    """[(0, "F" | "B", micro-batch)] of a rank's one stage: `num_stages - 1 - stage_index` forwards ahead, then
    one forward and one backward in turn, then the remaining backwards."""
    ahead = min(n, num_stages - 1 - stage_index)
    order = [(0, "F", i) for i in range(ahead)]
    for i in range(n - ahead):
        order += [(0, "F", ahead + i), (0, "B", i)]
    return order + [(0, "B", i) for i in range(n - ahead, n)]


def interleaved_1f1b_order(rank, world, v, n):
    """[(local stage, "F" | "B", micro-batch)] of group rank `rank` of `world` holding `v` stages, `n`
    micro-batches (a multiple of `world`): torch's ScheduleInterleaved1F1B order."""
    total = n * v
    warmup = min(total, (v - 1) * world + 2 * (world - 1 - rank))
    next_forward, next_backward, order = [0] * v, [0] * v, []

    def forward(k):
        local = (k // world) % v
        order.append((local, "F", next_forward[local]))
        next_forward[local] += 1

    def backward(k):
        local = v - 1 - (k // world) % v
        order.append((local, "B", next_backward[local]))
        next_backward[local] += 1

    for k in range(warmup):
        forward(k)
    for k in range(total - warmup):  # steady state: one forward, one backward
        forward(warmup + k)
        backward(k)
    for k in range(total - warmup, total):
        backward(k)
    return order


class _Schedule:
    """The engine: this rank's stages run in the order a subclass gives (`_order`)."""

    crosses_nodes = False  # whether its order works where sends wait for their receiver and know no tags (gloo)

    def __init__(self, stages, n_microbatches, loss_fn=None, output_merge_spec=None, scale_grads=True):
        name = type(self).__name__
        if isinstance(stages, PipelineStage):
            stages = [stages]
        if not isinstance(stages, list | tuple) or not stages:
            raise ConfigError(f"{name}: stages must be a non-empty list of this rank's PipelineStages, got {stages!r}")
        for stage in stages:
            if not isinstance(stage, PipelineStage):
                raise ConfigError(f"{name}: stages must be PipelineStages, got a {type(stage).__name__}")
        first = stages[0]
        for stage in stages[1:]:
            if stage._ranks != first._ranks or stage.num_stages != first.num_stages:
                raise ConfigError(
                    f"{name}: the stages mix groups: stage {first.stage_index} is one of {first.num_stages} on ranks "
                    f"{first._ranks}, stage {stage.stage_index} one of {stage.num_stages} on ranks {stage._ranks}"
                )
        indices = sorted(stage.stage_index for stage in stages)
        if len(set(indices)) != len(indices):
            raise ConfigError(f"{name}: a stage is given twice (stage indices {indices})")
        world = len(first._ranks)
        if first.num_stages != world * len(stages):
            raise ConfigError(
                f"{name}: this rank holds {len(stages)} stages ({indices}) of {first.num_stages} on {world} ranks; "
                f"hand it all {first.num_stages // world} of its stages (stage s on group rank s % {world})"
            )
        if isinstance(n_microbatches, bool) or not isinstance(n_microbatches, int) or n_microbatches < 1:
            raise ConfigError(f"{name}: n_microbatches must be a positive int, got {n_microbatches!r}")
        if output_merge_spec is not None:
            raise ConfigError(f"{name}: output_merge_spec is not supported (outputs join along dim 0)")
        if not self.crosses_nodes and world > 1 and p2p._collective() is not None:  # (one rank: nothing crosses)
            raise ConfigError(
                f"{name}: the launch's ranks meet over gloo / NCCL, which know no p2p tags and whose sends wait for "
                f"their receiver; use ScheduleGPipe there ({name} needs the one-node transport)"
            )
        self.stages = sorted(stages, key=lambda stage: stage.stage_index)
        self.world, self.rank, self.n = world, indices[0] % world, n_microbatches
        self.loss_fn, self.scale_grads = loss_fn, scale_grads
        self.peak_kept = 0  # the most micro-batches' activations the last training step held at once
        self._mail = collections.defaultdict(collections.deque)  # (stage, kind) -> what this rank sent itself

    def _order(self):
        raise NotImplementedError

    def _send(self, stage, tensor, to, kind):
        """`tensor` from `stage` into stage `to`: by p2p, or kept here where this rank holds `to` too (a group of
        one rank), detached as a message's would be (torch's set_local_fwd_input / set_local_bwd_input)."""
        if to % self.world != self.rank:
            return stage._send(tensor, to, tag=tag(to, kind))
        stage._check(tensor)
        sent = tensor.detach()
        self._mail[to, kind].append(sent.requires_grad_(True) if tensor.requires_grad and kind == ACTIVATION else sent)

    def _recv(self, stage, frm, device, kind):
        """The next tensor stage `frm` sends `stage` (see _send)."""
        s = stage.stage_index
        if frm % self.world != self.rank:
            return stage._recv(frm, device, tag=tag(s, kind))
        if not self._mail[s, kind]:
            raise ConfigError(f"{type(self).__name__}: stage {s} waits for stage {frm}, which this rank has not run")
        return self._mail[s, kind].popleft()

    def _forward(self, local, i, inputs, targets, training, kept, outputs, micro_losses):
        stage = self.stages[local]
        s = stage.stage_index
        x = inputs[i] if stage.is_first else self._recv(stage, s - 1, _device(stage.submod), ACTIVATION)
        y = stage.submod(x)
        if stage.is_last:
            outputs[i] = y.detach()
            if training:
                y = self.loss_fn(y, targets[i])
                micro_losses[i] = y
        else:
            self._send(stage, y, s + 1, ACTIVATION)
        if training:  # (kept for its backward)
            kept[local, i] = (x, y)
            self.peak_kept = max(self.peak_kept, len(kept))

    def _backward(self, local, i, kept):
        stage = self.stages[local]
        s = stage.stage_index
        x, y = kept.pop((local, i))
        if stage.is_last:
            y.backward()
        elif y.requires_grad:  # (else the next stage sends none back: its input needed none)
            y.backward(self._recv(stage, s + 1, y.device, GRADIENT))
        if not stage.is_first and x.requires_grad:  # the previous stage waits for it
            self._send(stage, x.grad if x.grad is not None else x.detach() * 0, s - 1, GRADIENT)

    def step(self, *args, target=None, losses=None, **kwargs):
        """One batch through the pipeline (see the module doc) → on the rank holding the last stage, its outputs
        joined along dim 0; elsewhere None."""
        name, n = type(self).__name__, self.n
        holds_first = any(stage.is_first for stage in self.stages)
        holds_last = any(stage.is_last for stage in self.stages)
        indices = [stage.stage_index for stage in self.stages]
        if kwargs or (bool(args) != holds_first) or len(args) > 1:
            raise ConfigError(
                f"{name}.step: the rank holding stages {indices} takes "
                + ("one input tensor (the batch)" if holds_first else "no input (its stages receive theirs)")
            )
        if (target is not None) != (holds_last and self.loss_fn is not None):
            raise ConfigError(
                f"{name}.step: target= goes to the rank holding the last stage, and only with a loss_fn "
                f"(stages {indices} of {self.stages[0].num_stages}, loss_fn {'given' if self.loss_fn else 'None'})"
            )
        inputs = _chunks(args[0], n, "the batch") if holds_first else None
        targets = _chunks(target, n, "target") if target is not None else None
        training = self.loss_fn is not None
        order = self._order() if training else [a for a in looped_bfs_order(len(self.stages), n) if a[1] == "F"]
        kept, outputs, micro_losses = {}, [None] * n, [None] * n
        self.peak_kept = 0
        self._mail.clear()
        with contextlib.nullcontext() if training else no_grad():
            for local, action, i in order:
                if action == "F":
                    self._forward(local, i, inputs, targets, training, kept, outputs, micro_losses)
                else:
                    self._backward(local, i, kept)
        if training and self.scale_grads:  # (torch's: every gradient in, then each divided by the count)
            seen = set()
            with no_grad():
                for stage in self.stages:
                    for p in stage.submod.parameters():
                        if p.grad is not None and id(p) not in seen:
                            seen.add(id(p))
                            p.grad.div_(n)
        if losses is not None and holds_last and training:
            losses.extend(loss.detach() for loss in micro_losses)
        return cat(outputs, dim=0) if holds_last else None


class _SingleStage(_Schedule):
    """torch's PipelineScheduleSingle: the rank's one stage (`self.stage`)."""

    def __init__(self, stage, n_microbatches, loss_fn=None, output_merge_spec=None, scale_grads=True):
        name = type(self).__name__
        if not isinstance(stage, PipelineStage):
            raise ConfigError(f"{name}: stage must be a PipelineStage, got {type(stage).__name__}")
        if stage.num_stages != len(stage._ranks):
            raise ConfigError(
                f"{name}: stage {stage.stage_index} is one of {stage.num_stages} stages on {len(stage._ranks)} "
                "ranks; a rank holding several runs ScheduleLoopedBFS or ScheduleInterleaved1F1B"
            )
        super().__init__([stage], n_microbatches, loss_fn, output_merge_spec, scale_grads)
        self.stage = stage


class ScheduleGPipe(_SingleStage):
    """Every micro-batch's forward, then every backward."""

    crosses_nodes = True  # a rank sends one way at a time: forwards up, then gradients down

    def _order(self):
        return looped_bfs_order(1, self.n)


class Schedule1F1B(_SingleStage):
    """`num_stages - 1 - stage_index` forwards ahead, then one forward and one backward in turn, then the rest of
    the backwards: a stage holds fewer micro-batches' activations than under GPipe."""

    def _order(self):
        return one_f_one_b_order(self.stage.stage_index, self.stage.num_stages, self.n)


class ScheduleLoopedBFS(_Schedule):
    """Stage by stage, every micro-batch's forward; then stage by stage in reverse, every backward."""

    def _order(self):
        return looped_bfs_order(len(self.stages), self.n)


class ScheduleInterleaved1F1B(_Schedule):
    """torch's interleaved 1F1B: rounds of W micro-batches through the rank's stages in turn, warmup forwards,
    then one forward and one backward in turn (module doc); n_microbatches must be a multiple of W."""

    def __init__(self, stages, n_microbatches, loss_fn=None, output_merge_spec=None, scale_grads=True):
        super().__init__(stages, n_microbatches, loss_fn, output_merge_spec, scale_grads)
        if self.n % self.world:
            raise ConfigError(
                f"ScheduleInterleaved1F1B: n_microbatches={self.n} is not a multiple of the group's {self.world} "
                "ranks (torch's microbatches_per_round: it goes round the ranks W micro-batches at a time)"
            )

    def _order(self):
        return interleaved_1f1b_order(self.rank, self.world, len(self.stages), self.n)
