"""FSDP over some ranks (distributed/fsdp_groups.py): `process_group=new_group(...)` and the hybrid strategies
(split within a shard group, replicated across a replicate group) on 4 real Ray ranks train as one process on the
global batches in float64 — shard groups of two (given as groups, or as torch's 2-d device mesh), and of one
(replicated over all four: DDP's arithmetic); place 0
of each shard group gets a rank0_only state dict, as torch's; a sharded checkpoint writes a replicated piece once
and loads back on every replica; torch's default groups follow the nodes."""

import os

import numpy as np
import pytest

import distgraph.distributed as dist
import distgraph.distributed.checkpoint as dcp
import distgraph.nn as nn
import distgraph.optim as optim
from distgraph.distributed.fsdp import (
    FSDP,
    FullOptimStateDictConfig,
    FullStateDictConfig,
    ModuleWrapPolicy,
    ShardingStrategy,
    StateDictType,
)  # fmt: skip
from distgraph.distributed.fsdp_groups import hybrid_layout
from distgraph.errors import ConfigError
from tests.distributed.test_fsdp import _model, _one_process, _steps

WORLD = 4
UNITS = {"auto_wrap_policy": ModuleWrapPolicy({nn.Linear})}


def _groups(layout):
    """ "pairs": shard groups {0, 1} and {2, 3}, replicate groups {0, 2} and {1, 3}; "singles": each rank its own
    shard group, all four replicas. Every rank makes each group, in one order."""
    me = dist.get_rank()
    if layout == "singles":
        return [dist.new_group([r]) for r in range(WORLD)][me], dist.group.WORLD
    made = [dist.new_group(r) for r in ([0, 1], [2, 3], [0, 2], [1, 3])]
    return next(g for g in made[:2] if me in g.ranks), next(g for g in made[2:] if me in g.ranks)


def _hybrid_rank(strategy, layout, folder):
    if layout == "mesh":  # torch's way: a 2-d mesh (replicate, shard) — the pairs' groups
        mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
        model = FSDP(_model(), device_mesh=mesh, sharding_strategy=ShardingStrategy[strategy], **UNITS)
    else:
        model = FSDP(_model(), process_group=_groups(layout), sharding_strategy=ShardingStrategy[strategy], **UNITS)
    opt = optim.Adam(model.parameters(), lr=0.01)
    at_rest = sum(p.numel() for p in model.parameters())
    norm = _steps(model, opt, dist.get_rank(), WORLD, lambda m: m.clip_grad_norm_(0.5))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    configs = (StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True),
               FullOptimStateDictConfig(rank0_only=True))  # fmt: skip
    with FSDP.state_dict_type(model, *configs):
        only_on_0 = (len(model.state_dict()) > 0, len(FSDP.optim_state_dict(model, opt)) > 0)
    with FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT):
        dcp.save({"model": model.state_dict()}, checkpoint_id=folder)
    again = FSDP(_model(), process_group=model._groups, sharding_strategy=ShardingStrategy[strategy], **UNITS)
    with FSDP.state_dict_type(again, StateDictType.SHARDED_STATE_DICT):
        loaded = {"model": again.state_dict()}
        dcp.load(loaded, checkpoint_id=folder)
        again.load_state_dict(loaded["model"])
    reloaded = {k: v.numpy() for k, v in again.state_dict().items()}
    return {"state": state, "norm": norm, "at_rest": at_rest, "only_on_0": only_on_0, "reloaded": reloaded}


@pytest.mark.ray
def test_hybrid_sharding_on_four_ranks_trains_as_one_process_and_checkpoints_each_piece_once(ray_session, tmp_path):
    plain, _, plain_norm = _one_process(WORLD)
    want = {k: v.numpy() for k, v in plain.state_dict().items()}
    whole = sum(p.numel() for p in _model().parameters())
    runs = [
        ("HYBRID_SHARD", "pairs"),
        ("_HYBRID_SHARD_ZERO2", "pairs"),
        ("HYBRID_SHARD", "singles"),
        ("HYBRID_SHARD", "mesh"),
    ]
    for strategy, layout in runs:
        folder = str(tmp_path / f"{strategy}-{layout}")
        args = (strategy, layout, folder)
        ranks = dist.launch(_hybrid_rank, workers=WORLD, cpus_per_worker=0.5, args=args, timeout_s=60)
        if layout == "singles":  # whole on every rank: rank 0 writes the tensors every rank holds alike
            assert [r["at_rest"] for r in ranks] == [whole] * WORLD
            assert [r["only_on_0"] for r in ranks] == [(True, True)] * WORLD
            assert sorted(f for f in os.listdir(folder) if f.endswith(".distcp")) == ["__0_1.distcp"]
        for r in ranks:
            for k in want:
                np.testing.assert_allclose(r["state"][k], want[k], rtol=0, atol=1e-12, err_msg=f"{strategy} {k}")
                np.testing.assert_array_equal(r["reloaded"][k], r["state"][k])
            assert r["norm"] == pytest.approx(plain_norm, rel=1e-12, abs=0)
        if layout in ("pairs", "mesh"):
            assert all(r["at_rest"] < whole for r in ranks)  # each unit split over its shard group of 2
            # torch's rank 0 of a rank0_only state dict: place 0 of each shard group ({0, 1}, {2, 3})
            assert [r["only_on_0"] for r in ranks] == [(True, True), (False, False)] * 2
            # each replicated piece written once: ranks 2 and 3 hold what 0 and 1 hold, and write no file
            assert sorted(f for f in os.listdir(folder) if f.endswith(".distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def _subgroup_rank():
    """Two models, each FULL_SHARD over a group of 2: ranks 0-1 and ranks 2-3 train independently."""
    pair = [dist.new_group(r) for r in ([0, 1], [2, 3])][dist.get_rank() // 2]
    with pytest.raises(ConfigError, match=r"must have this rank \(\d\) alone in common, not \[\d, \d\]"):
        FSDP(_model(), process_group=(pair, pair), sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    model = FSDP(_model(), process_group=pair, **UNITS)
    opt = optim.Adam(model.parameters(), lr=0.01)
    norm = _steps(model, opt, pair.rank(), 2, lambda m: m.clip_grad_norm_(0.5))
    return {k: v.numpy() for k, v in model.state_dict().items()}, norm


@pytest.mark.ray
def test_a_process_group_of_two_of_four_ranks_shards_and_averages_over_those_alone(ray_session):
    plain, _, plain_norm = _one_process(2)
    want = {k: v.numpy() for k, v in plain.state_dict().items()}
    for state, norm in dist.launch(_subgroup_rank, workers=WORLD, cpus_per_worker=0.5, timeout_s=60):
        for k in want:
            np.testing.assert_allclose(state[k], want[k], rtol=0, atol=1e-12, err_msg=k)
        assert norm == pytest.approx(plain_norm, rel=1e-12, abs=0)


def test_the_default_hybrid_groups_shard_within_a_node_and_replicate_across_nodes():
    assert hybrid_layout(["a", "a", "b", "b"]) == ([[0, 1], [2, 3]], [[0, 2], [1, 3]])
    assert hybrid_layout(["a", "b", "a", "b"]) == ([[0, 2], [1, 3]], [[0, 1], [2, 3]])
    assert hybrid_layout(["a", "a", "a"]) == ([[0, 1, 2]], [[0], [1], [2]])
    with pytest.raises(ConfigError, match="as many ranks on every node, got 2 on node 0, 1 on node 1"):
        hybrid_layout(["a", "a", "b"])


def test_alone_a_hybrid_strategy_is_the_plain_model_and_bad_groups_are_refused_by_name():
    plain = _model()
    plain_opt = optim.Adam(plain.parameters(), lr=0.01)
    plain_norm = _steps(plain, plain_opt, 0, 1, lambda m: nn.utils.clip_grad_norm_(m.parameters(), 0.5))
    model = FSDP(_model(), sharding_strategy=ShardingStrategy.HYBRID_SHARD, **UNITS)
    norm = _steps(model, optim.Adam(model.parameters(), lr=0.01), 0, 1, lambda m: m.clip_grad_norm_(0.5))
    assert norm == pytest.approx(plain_norm, rel=1e-15, abs=0)
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=0, atol=1e-15, err_msg=k)
    with pytest.raises(ConfigError, match=r"process_group=\(shard group, replicate group\) is for HYBRID_SHARD"):
        FSDP(_model(), process_group=(None, None))
    with pytest.raises(ConfigError, match="a hybrid sharding strategy takes process_group=.* got 3"):
        FSDP(_model(), process_group=3, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    with pytest.raises(ConfigError, match="process_group must be a new_group's or None, got 'x'"):
        FSDP(_model(), process_group="x")
    mesh = dist.init_device_mesh("cpu", (1,))
    with pytest.raises(ConfigError, match="Cannot pass both process_group and device_mesh at the same time"):
        FSDP(_model(), process_group=dist.group.WORLD, device_mesh=mesh)
    with pytest.raises(ConfigError, match=r"a hybrid strategy takes a 2-d device_mesh \(replicate, shard\)"):
        FSDP(_model(), device_mesh=mesh, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
