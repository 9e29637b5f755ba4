"""torch.distributed.pipelining's multi-stage schedules (distributed/pipelining_schedules.py): every rank's order
simulated (non-blocking sends, blocking receives) completes with each stage's micro-batches in order, and
Interleaved1F1B keeps fewer activations than LoopedBFS; on 2 real Ray ranks holding 2 stages each, both
schedules give one process's outputs, per-micro-batch losses and gradients (float64); errors named."""

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


def _parts(model):
    return [model[0:2], model[2:4], model[4:6], model[6:7]]


def _data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((ROWS, 5))
    return dg.tensor(x), dg.tensor((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64))


def _one_process():
    model = _model()
    x, y = _data()
    cuts = [(0, 4), (4, 8), (8, 11), (11, 14)]
    micro = [F.cross_entropy(model(x[a:b]), y[a:b]) for a, b in cuts]
    (sum(micro) / MICRO).backward()  # torch's scale_grads: the mean of the micro-batches' losses
    grads = [[p.grad.numpy() for p in part.parameters()] for part in _parts(model)]
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
    errors = ranks[0]["errors"]
    assert "stage_index=1 is not this rank's place (0) in the group [0, 1]" in errors[0]
    assert "n_microbatches=3 is not a multiple of the group's 2 ranks" in errors[1]
    assert "this rank holds 1 stages ([0]) of 4 on 2 ranks" in errors[2]
    assert "stage 0 is one of 4 stages on 2 ranks" in errors[3] and "ScheduleInterleaved1F1B" in errors[3]


def _fake_stage(submod, index, num_stages, ranks):
    """A PipelineStage as rank 0 of `ranks` would build it (outside a launch every stage is rank 0's of 1)."""
    stage = PipelineStage.__new__(PipelineStage)
    stage.submod, stage.stage_index, stage.num_stages, stage._ranks = submod, index, num_stages, list(ranks)
    return stage


@pytest.mark.parametrize("cls", [ScheduleLoopedBFS, ScheduleInterleaved1F1B])
def test_one_rank_holding_every_stage_first_and_last_gives_one_process_run(cls):
    parts = _parts(_model())
    stages = [_fake_stage(part, s, 4, [0]) for s, part in enumerate(parts)]
    x, y = _data()
    losses = []
    out = cls(stages, MICRO, loss_fn=F.cross_entropy).step(x, target=y, losses=losses)
    want_out, micro, grads = _one_process()
    np.testing.assert_allclose(out.numpy(), want_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose([float(v) for v in losses], micro, rtol=0, atol=1e-12)
    for part, want in zip(parts, grads, strict=True):
        for p, g in zip(part.parameters(), want, strict=True):
            np.testing.assert_allclose(p.grad.numpy(), g, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match=r"the rank holding stages \[0, 1, 2, 3\] takes one input tensor"):
        cls(stages, MICRO, loss_fn=F.cross_entropy).step(target=y)
    with pytest.raises(ConfigError, match="target= goes to the rank holding the last stage, and only with a loss_fn"):
        cls(stages, MICRO, loss_fn=F.cross_entropy).step(x)


def test_alone_bad_stage_lists_are_named():
    linear = nn.Linear(2, 2)
    a, b = _fake_stage(linear, 0, 4, [0, 1]), _fake_stage(linear, 2, 4, [0, 1])
    for cls in (ScheduleLoopedBFS, ScheduleInterleaved1F1B):
        with pytest.raises(ConfigError, match=f"{cls.__name__}: stages must be a non-empty list"):
            cls([], 2)
        with pytest.raises(ConfigError, match="stages must be PipelineStages, got a Linear"):
            cls([a, linear], 2)
        with pytest.raises(
            ConfigError, match=r"the stages mix groups: stage 0 is one of 4 on ranks \[0, 1\], stage 2 "
        ):
            cls([a, _fake_stage(linear, 2, 4, [0, 2])], 2)
        with pytest.raises(ConfigError, match=r"a stage is given twice \(stage indices \[0, 0\]\)"):
            cls([a, a], 2)
        with pytest.raises(ConfigError, match="n_microbatches must be a positive int"):
            cls([a, b], 0)
    ScheduleLoopedBFS([a, b], 3)  # any count of micro-batches
    with pytest.raises(
        ConfigError, match="ScheduleInterleaved1F1B: n_microbatches=3 is not a multiple of the group's 2"
    ):
        ScheduleInterleaved1F1B([a, b], 3)
    with pytest.raises(ConfigError, match="num_stages=4, but the group has 1 ranks"):
        PipelineStage(linear, 0, 4)  # (one rank: one stage, as before)


def test_across_nodes_the_multi_stage_schedules_are_refused_by_name(monkeypatch):
    from distgraph.distributed import p2p

    monkeypatch.setattr(p2p, "_collective", lambda: object())  # as when the launch's ranks meet over gloo
    stages = [_fake_stage(nn.Linear(2, 2), 0, 4, [0, 1]), _fake_stage(nn.Linear(2, 2), 2, 4, [0, 1])]
    for cls in (ScheduleLoopedBFS, ScheduleInterleaved1F1B):
        with pytest.raises(ConfigError, match=f"{cls.__name__}: the launch's ranks meet over gloo / NCCL"):
            cls(stages, 2)
