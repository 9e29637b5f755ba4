"""torch's DeviceMesh (distributed/device_mesh.py) and new_subgroups on 4 real Ray ranks: a (2, 2) mesh's groups
along each dimension, sub-meshes by name, collectives over a dimension's group, DDP over a 1-d mesh; alone, a
mesh of one rank and the errors, named."""

import os

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
from distgraph.errors import ConfigError


def _on_each_rank():
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    shard, replicate = mesh.get_group("shard"), mesh.get_group(0)
    t = dg.tensor(np.array([float(dist.get_rank())]))
    dist.all_reduce(t, group=shard)
    sub = mesh["shard"]
    flipped = mesh[("shard", "replicate")]
    dg.manual_seed(dist.get_rank())  # each rank its own start: its shard row's first rank's wins
    ddp = dist.DistributedDataParallel(nn.Linear(2, 2), device_mesh=sub)
    with pytest.raises(ConfigError, match="Only 1D device mesh is supported"):
        dist.DistributedDataParallel(nn.Linear(2, 2), device_mesh=mesh)
    with pytest.raises(ConfigError, match="mesh_dim needs to be specified when device_mesh.ndim > 1"):
        mesh.get_group()
    with pytest.raises(ConfigError, match="no mesh dimension named 'tp'"):
        mesh["tp"]
    with pytest.raises(ConfigError, match=r"each dimension may be named once, got \('shard', 'shard'\)"):
        mesh["shard", "shard"]
    # a mesh of ranks 1 and 2 alone: the others make its groups too and hold none (torch's rule)
    partial = dist.DeviceMesh("cpu", [2, 1])
    outside = (partial.get_coordinate(), partial.get_group())
    inside = None if outside[0] is None else partial.get_local_rank()  # its group's rank: ranks sorted, as torch's
    if outside[0] is None:  # a rank outside a mesh takes no part in what runs over it
        with pytest.raises(ConfigError, match=r"this rank \(\d\) is not in the device_mesh"):
            dist.DistributedDataParallel(nn.Linear(2, 2), device_mesh=partial)
    cur, pairs = dist.new_subgroups(2)
    odd, groups = dist.new_subgroups_by_enumeration([[0, 3], [1, 2]])
    return {
        "layout": (mesh.shape, mesh.ndim, mesh.size(), mesh.size("shard"), mesh.get_coordinate()),
        "places": (mesh.get_local_rank("replicate"), mesh.get_local_rank("shard"), mesh.get_rank()),
        "groups": (dist.get_process_group_ranks(shard), dist.get_process_group_ranks(replicate)),
        "sum": t.item(),
        "sub": (sub.mesh.tolist(), sub.get_group() is shard, sub.mesh_dim_names, flipped.mesh.tolist()),
        "ddp": ddp.module.weight.detach().numpy(),
        "subgroups": (list(cur.ranks), [list(g.ranks) for g in pairs], list(odd.ranks), len(groups)),
        "env": (dist.get_node_local_rank(), dist.is_torchelastic_launched(), int(os.environ["LOCAL_RANK"])),
        "repr": repr(mesh),
        "partial": (outside[0], outside[1] is None, inside),
    }


@pytest.mark.ray
def test_a_two_by_two_mesh_has_a_group_along_each_dimension_on_four_ranks(ray_session):
    ranks = dist.launch(_on_each_rank, workers=4, cpus_per_worker=0.5, timeout_s=60)
    for r, out in enumerate(ranks):
        row, col = divmod(r, 2)
        assert out["layout"] == ((2, 2), 2, 4, 2, (row, col))
        assert out["places"] == (row, col, r)
        assert out["groups"] == ([2 * row, 2 * row + 1], [col, col + 2])
        assert out["sum"] == 4 * row + 1  # 2·row + (2·row + 1)
        # mesh["shard"]: this rank's row, with the mesh's own group; both names reordered: the mesh transposed
        assert out["sub"] == ([2 * row, 2 * row + 1], True, ("shard",), [[0, 2], [1, 3]])
        np.testing.assert_array_equal(out["ddp"], ranks[2 * row]["ddp"])  # the row's first rank's parameters
        assert out["subgroups"] == ([2 * row, 2 * row + 1], [[0, 1], [2, 3]], [0, 3] if r in (0, 3) else [1, 2], 2)
        assert out["env"][:2] == (out["env"][2], True)  # a launch sets TORCHELASTIC_RUN_ID, as torchrun
        assert out["repr"] == "DeviceMesh((replicate=2, shard=2), 'cpu', stride=(2, 1))"  # torch 2.13's
        assert (
            out["partial"]
            == {0: (None, True, None), 1: ((1,), False, 0), 2: ((0,), False, 1), 3: (None, True, None)}[r]
        )
    assert not np.array_equal(ranks[0]["ddp"], ranks[2]["ddp"])  # two rows, two replicas


def test_alone_a_mesh_is_the_launchs_group_and_bad_layouts_are_named():
    mesh = dist.init_device_mesh("cpu", (1,))
    assert mesh.get_group() is dist.group.WORLD and mesh.size() == 1 and mesh.get_coordinate() == (0,)
    assert mesh.get_local_rank() == 0 and repr(mesh) == "DeviceMesh((1,), 'cpu', stride=(1,))"
    with pytest.raises(ConfigError, match=r"mesh_shape \(2,\) holds 2 ranks, the launch has 1"):
        dist.init_device_mesh("cpu", (2,))
    with pytest.raises(ConfigError, match="mesh_dim_names .* must name each of the mesh's 1 dimensions once"):
        dist.init_device_mesh("cpu", (1,), mesh_dim_names=("a", "b"))
    with pytest.raises(ConfigError, match=r"mesh \[0, 0\] must hold distinct ranks"):
        dist.DeviceMesh("cpu", [0, 0])
    with pytest.raises(ConfigError, match="mesh must be a non-empty n-d array of ranks"):
        dist.DeviceMesh("cpu", [[0], [1, 2]])
    with pytest.raises(ConfigError, match="new_subgroups: group_size must divide the launch's 1 ranks, got 2"):
        dist.new_subgroups(2)
    with pytest.raises(ConfigError, match="every rank may be in one subgroup at most"):
        dist.new_subgroups_by_enumeration([[0], [0]])
    assert dist.get_node_local_rank(fallback_rank=3) == (
        int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else 3
    )
    assert dist.is_torchelastic_launched() is ("TORCHELASTIC_RUN_ID" in os.environ)
