"""torch.distributed.pipelining's multi-stage schedules (distributed/pipelining_schedules.py): every rank's order
simulated (non-blocking sends, blocking receives) completes with each stage's micro-batches in order, and
Interleaved1F1B keeps fewer activations than LoopedBFS; on 2 real Ray ranks holding 2 stages each, both
schedules give one process's outputs, per-micro-batch losses and gradients (float64), and so does a group of one
rank holding every stage (outside a launch, or dist.new_group of one rank inside one), its stages handing over
in-process; errors named."""

import collections

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.distributed.pipelining import (
    PipelineStage,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleLoopedBFS,
)
from distgraph.distributed.pipelining_schedules import interleaved_1f1b_order, looped_bfs_order
from distgraph.distributed.subgroups import SubGroup
from distgraph.errors import ConfigError

ROWS, MICRO, WORLD, V = 14, 4, 2, 2  # micro-batches of 4, 4, 3, 3 rows; 4 stages on 2 ranks


def _orders(kind, world, v, n):
    return {
        r: looped_bfs_order(v, n) if kind == "bfs" else interleaved_1f1b_order(r, world, v, n) for r in range(world)
    }


def _simulate(kind, world, v, n):
    """Run every rank's order, stage s on rank s % world, sends never waiting, a receive waiting for its
    message (FIFO per receiving stage and kind) → (each stage's forward and backward micro-batch orders, each
    rank's peak of kept activations); fails on a deadlock or a message meeting the wrong micro-batch."""
    orders, last = _orders(kind, world, v, n), world * v - 1
    at = dict.fromkeys(orders, 0)
    channels = collections.defaultdict(collections.deque)  # (receiving stage, kind) -> micro-batches in flight
    seen = collections.defaultdict(list)  # (stage, "F" | "B") -> micro-batches in order
    kept, peak = collections.defaultdict(set), dict.fromkeys(orders, 0)
    progress = True
    while progress:
        progress = False
        for r, order in orders.items():
            while at[r] < len(order):
                local, action, i = order[at[r]]
                s = local * world + r
                if action == "F":
                    if s > 0:
                        if not channels[s, "act"]:
                            break
                        assert channels[s, "act"].popleft() == i
                    if s < last:
                        channels[s + 1, "act"].append(i)
                    kept[r].add((s, i))
                    peak[r] = max(peak[r], len(kept[r]))
                else:
                    assert (s, i) in kept[r], f"backward of stage {s} micro-batch {i} before its forward"
                    if s < last:
                        if not channels[s, "grad"]:
                            break
                        assert channels[s, "grad"].popleft() == i
                    if s > 0:
                        channels[s - 1, "grad"].append(i)
                    kept[r].remove((s, i))
                seen[s, action].append(i)
                at[r] += 1
                progress = True
    stuck = {r: orders[r][at[r]] for r in orders if at[r] < len(orders[r])}
    assert not stuck, f"{kind} W={world} v={v} n={n} deadlocks: ranks wait at {stuck}"
    assert not any(channels.values())
    return seen, peak


@pytest.mark.parametrize("kind", ["bfs", "interleaved"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("v", [1, 2, 3])
def test_every_rank_order_completes_with_each_stage_in_micro_batch_order(kind, world, v):
    for n in (world, 2 * world, 3 * world):
        seen, _ = _simulate(kind, world, v, n)
        for s in range(world * v):
            assert seen[s, "F"] == list(range(n)) and seen[s, "B"] == list(range(n)), (kind, world, v, n, s)
        for r, order in _orders(kind, world, v, n).items():  # every stage's every micro-batch, once each way
            assert sorted(order) == sorted((local, a, i) for local in range(v) for a in "FB" for i in range(n))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_interleaved_keeps_fewer_activations_than_looped_bfs(world):
    _, bfs = _simulate("bfs", world, 2, 2 * world)
    _, interleaved = _simulate("interleaved", world, 2, 2 * world)
    assert max(bfs.values()) == 2 * 2 * world
    assert all(interleaved[r] < bfs[r] for r in range(world)), (interleaved, bfs)
    assert max(interleaved.values()) < max(bfs.values())


def test_interleaved_order_is_torch_s():
    # W=2, v=2, n=4, rank 0: 4 warmup forwards (rounds of 2 per local stage), then 1F1B, backwards last stage first
    assert interleaved_1f1b_order(0, 2, 2, 4) == [
        (0, "F", 0), (0, "F", 1), (1, "F", 0), (1, "F", 1), (0, "F", 2), (1, "B", 0), (0, "F", 3), (1, "B", 1),
        (1, "F", 2), (0, "B", 0), (1, "F", 3), (0, "B", 1), (1, "B", 2), (1, "B", 3), (0, "B", 2), (0, "B", 3),
    ]  # fmt: skip
    assert interleaved_1f1b_order(1, 2, 2, 4)[:4] == [(0, "F", 0), (0, "F", 1), (1, "F", 0), (1, "B", 0)]


def _model():
    dg.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)
    ).to(dg.float64)


def _parts(model, num_stages=4):
    """`model` cut into `num_stages` stages: 4, a Linear (and its Tanh) each; 2, two of those each."""
    cuts = {4: (0, 2, 4, 6, 7), 2: (0, 4, 7)}[num_stages]
    return [model[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def _data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((ROWS, 5))
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


def _one_process(num_stages=4):
    model = _model()
    x, y = _data()
    cuts = [(0, 4), (4, 8), (8, 11), (11, 14)]
    micro = [F.cross_entropy(model(x[a:b]), y[a:b]) for a, b in cuts]
    (sum(micro) / MICRO).backward()  # torch's scale_grads: the mean of the micro-batches' losses
    grads = [[p.grad.numpy() for p in part.parameters()] for part in _parts(model, num_stages)]
    return model(x).detach().numpy(), [float(v) for v in micro], grads


def _step(schedule, holds_first, holds_last, x, y, losses):
    if holds_first and holds_last:
        return schedule.step(x, target=y, losses=losses)
    return (
        schedule.step(x) if holds_first else schedule.step(target=y, losses=losses) if holds_last else schedule.step()
    )


def _on_each_rank():
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = _data()
    result = {}
    for name, cls in (("bfs", ScheduleLoopedBFS), ("interleaved", ScheduleInterleaved1F1B)):
        parts = _parts(_model())
        mine = list(range(rank, world * V, world))
        stages = [PipelineStage(parts[s], s, world * V) for s in mine]
        schedule = cls(stages[::-1], MICRO, loss_fn=F.cross_entropy)  # (any order: sorted by stage index)
        losses = []
        out = _step(schedule, 0 in mine, world * V - 1 in mine, x, y, losses)
        result[name] = {
            "out": None if out is None else out.numpy(), "losses": [float(v) for v in losses],
            "grads": {s: [p.grad.numpy() for p in parts[s].parameters()] for s in mine}, "peak": schedule.peak_kept,
        }  # fmt: skip
        forward_only = cls(stages, MICRO)
        again = forward_only.step(x) if rank == 0 else forward_only.step()
        result[name]["again"] = None if again is None else again.numpy()
    # a group of this rank alone (dist.new_group of one rank): it holds both stages of 2, handing over in-process
    alone = dist.new_group([rank], use_local_synchronization=True)
    parts = _parts(_model(), 2)
    losses = []
    out = ScheduleInterleaved1F1B([PipelineStage(part, s, 2, group=alone) for s, part in enumerate(parts)], MICRO,
                                  loss_fn=F.cross_entropy).step(x, target=y, losses=losses)  # fmt: skip
    result["alone"] = {"out": out.numpy(), "losses": [float(v) for v in losses],
                       "grads": [[p.grad.numpy() for p in part.parameters()] for part in parts]}  # fmt: skip
    errors = []
    for call in (
        lambda: PipelineStage(nn.Linear(2, 2), (rank + 1) % world, world * V),  # the other rank's stage
        lambda: ScheduleInterleaved1F1B(stages, 3),  # not a multiple of the 2 ranks
        lambda: ScheduleLoopedBFS(stages[:1], 4),  # one of this rank's two stages left out
        lambda: ScheduleGPipe(stages[0], 4),  # a single-stage schedule given one of several stages
    ):
        with pytest.raises(ConfigError) as info:
            call()
        errors.append(str(info.value))
    result["errors"] = errors
    return result


@pytest.mark.ray
def test_four_stages_on_two_ranks_give_one_process_outputs_losses_and_gradients(ray_session):
    ranks = dist.launch(_on_each_rank, workers=WORLD, cpus_per_worker=0.5, timeout_s=60)
    out, micro, grads = _one_process()
    for name in ("bfs", "interleaved"):
        last = ranks[1][name]  # stage 3 on rank 1
        np.testing.assert_allclose(last["out"], out, rtol=0, atol=1e-12)
        np.testing.assert_allclose(last["again"], out, rtol=0, atol=1e-12)
        np.testing.assert_allclose(last["losses"], micro, rtol=0, atol=1e-12)
        assert ranks[0][name]["out"] is None and ranks[0][name]["losses"] == [] and ranks[0][name]["again"] is None
        for rank in range(WORLD):
            for s, got in ranks[rank][name]["grads"].items():
                assert s % WORLD == rank
                for g, want in zip(got, grads[s], strict=True):
                    np.testing.assert_allclose(g, want, rtol=0, atol=1e-12)
    assert [r["bfs"]["peak"] for r in ranks] == [8, 8]
    assert [r["interleaved"]["peak"] for r in ranks] == [5, 3]
    out, micro, grads = _one_process(2)
    for rank in range(WORLD):
        alone = ranks[rank]["alone"]
        np.testing.assert_allclose(alone["out"], out, rtol=0, atol=1e-12)
        np.testing.assert_allclose(alone["losses"], micro, rtol=0, atol=1e-12)
        for got, want in zip(alone["grads"], grads, strict=True):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
    errors = ranks[0]["errors"]
    assert "stage_index=1 is not this rank's place (0) in the group [0, 1]" in errors[0]
    assert "n_microbatches=3 is not a multiple of the group's 2 ranks" in errors[1]
    assert "this rank holds 1 stages ([0]) of 4 on 2 ranks" in errors[2]
    assert "stage 0 is one of 4 stages on 2 ranks" in errors[3] and "ScheduleInterleaved1F1B" in errors[3]


def _one_rank_stages(num_stages, model=None):
    """Every stage of `model` (a fresh one by default) cut `num_stages` ways, on the group of one rank that
    a process outside a launch is: this rank holds them all."""
    parts = _parts(_model() if model is None else model, num_stages)
    return parts, [PipelineStage(part, s, num_stages) for s, part in enumerate(parts)]


@pytest.mark.parametrize("num_stages", [2, 4])
@pytest.mark.parametrize("cls", [ScheduleLoopedBFS, ScheduleInterleaved1F1B])
def test_one_rank_holding_every_stage_gives_one_process_outputs_losses_and_gradients(cls, num_stages):
    parts, stages = _one_rank_stages(num_stages)
    x, y = _data()
    losses = []
    schedule = cls(stages[::-1], MICRO, loss_fn=F.cross_entropy)  # (any order: sorted by stage index)
    out = schedule.step(x, target=y, losses=losses)  # the rank holds the first stage and the last: both
    want_out, micro, grads = _one_process(num_stages)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose([float(v) for v in losses], micro, rtol=0, atol=1e-12)
    for part, want in zip(parts, grads, strict=True):
        for p, g in zip(part.parameters(), want, strict=True):
            np.testing.assert_allclose(p.grad.numpy(), g, rtol=0, atol=1e-12)
    # LoopedBFS holds every micro-batch of every stage; Interleaved1F1B (W=1: v - 1 warmup forwards) one a stage
    assert schedule.peak_kept == (MICRO * num_stages if cls is ScheduleLoopedBFS else num_stages)
    np.testing.assert_allclose(cls(stages, MICRO).step(x).numpy(), want_out, rtol=0, atol=1e-12)  # forward only
    with pytest.raises(ConfigError, match=r"the rank holding stages \[0, 1(, 2, 3)?\] takes one input tensor"):
        schedule.step(target=y)
    with pytest.raises(ConfigError, match="target= goes to the rank holding the last stage, and only with a loss_fn"):
        schedule.step(x)


@pytest.mark.parametrize("cls", [ScheduleLoopedBFS, ScheduleInterleaved1F1B])
def test_one_rank_hands_no_gradient_to_a_frozen_first_stage_nor_a_tuple_on(cls):
    parts, stages = _one_rank_stages(2)
    for p in parts[0].parameters():
        p.requires_grad_(False)  # its output requires no grad: the next stage's input gets none, sends none back
    x, y = _data()
    cls(stages, MICRO, loss_fn=F.cross_entropy).step(x, target=y)
    assert all(p.grad is None for p in parts[0].parameters())
    assert all(p.grad is not None for p in parts[1].parameters())

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    pair = [PipelineStage(Pair(), 0, 2), PipelineStage(nn.Linear(5, 3).to(dg.float64), 1, 2)]
    with pytest.raises(ConfigError, match="PipelineStage 0: a stage hands over one tensor, got tuple"):
        cls(pair, MICRO, loss_fn=F.cross_entropy).step(x, target=y)  # refused as a message would be


def _two_rank_stage(submod, index, ranks=(0, 1)):
    """Stage `index` of 4 on a group of two ranks, as the group's first rank builds it (outside a launch this
    process is rank 0); for the refusals, which send nothing."""
    return PipelineStage(submod, index, 4, group=SubGroup(ranks, "pipelining-test"))


def test_alone_bad_stages_and_stage_lists_are_named():
    linear = nn.Linear(2, 2)
    _, stages = _one_rank_stages(4)
    a, b = _two_rank_stage(linear, 0), _two_rank_stage(linear, 2)
    for cls in (ScheduleLoopedBFS, ScheduleInterleaved1F1B):
        with pytest.raises(ConfigError, match=f"{cls.__name__}: stages must be a non-empty list"):
            cls([], 2)
        with pytest.raises(ConfigError, match="stages must be PipelineStages, got a Linear"):
            cls([stages[0], linear], 2)
        with pytest.raises(
            ConfigError, match=r"the stages mix groups: stage 0 is one of 4 on ranks \[0, 1\], stage 2 "
        ):
            cls([a, _two_rank_stage(linear, 2, (0, 2))], 2)
        with pytest.raises(ConfigError, match=r"the stages mix groups: stage 0 is one of 2 on ranks \[0\], stage 1 "):
            cls([PipelineStage(linear, 0, 2), stages[1]], 2)
        with pytest.raises(ConfigError, match=r"a stage is given twice \(stage indices \[0, 0, 1, 2\]\)"):
            cls(stages[:1] + stages[:3], 2)
        with pytest.raises(
            ConfigError, match=r"this rank holds 3 stages \(\[0, 1, 2\]\) of 4 on 1 ranks; hand it all 4"
        ):
            cls(stages[:3], 2)
        with pytest.raises(ConfigError, match="n_microbatches must be a positive int"):
            cls(stages, 0)
    ScheduleLoopedBFS([a, b], 3)  # any count of micro-batches
    ScheduleInterleaved1F1B(stages, 3)  # (a multiple of one rank)
    with pytest.raises(
        ConfigError, match="ScheduleInterleaved1F1B: n_microbatches=3 is not a multiple of the group's 2"
    ):
        ScheduleInterleaved1F1B([a, b], 3)
    with pytest.raises(ConfigError, match="PipelineStage: num_stages=3 is not a multiple of the group's 2 ranks"):
        PipelineStage(linear, 0, 3, group=SubGroup((0, 1), "pipelining-test"))
    with pytest.raises(ConfigError, match=r"stage_index=1 is not this rank's place \(0\) in the group \[0, 1\]"):
        _two_rank_stage(linear, 1)


def test_across_nodes_the_multi_stage_schedules_are_refused_by_name_unless_one_rank(monkeypatch):
    from distgraph.distributed import p2p

    monkeypatch.setattr(p2p, "_collective", lambda: object())  # as when the launch's ranks meet over gloo
    stages = [_two_rank_stage(nn.Linear(2, 2), 0), _two_rank_stage(nn.Linear(2, 2), 2)]
    for cls in (ScheduleLoopedBFS, ScheduleInterleaved1F1B):
        with pytest.raises(ConfigError, match=f"{cls.__name__}: the launch's ranks meet over gloo / NCCL"):
            cls(stages, 2)
        _, alone = _one_rank_stages(2)  # a group of one rank sends nothing: it runs
        x, y = _data()
        assert cls(alone, MICRO, loss_fn=F.cross_entropy).step(x, target=y).shape == (ROWS, 3)
