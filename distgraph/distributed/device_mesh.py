"""torch.distributed.device_mesh inside a `dg.distributed.launch`: the launch's ranks laid out as an n-d array,
with a process group along each dimension — how torch sets up hybrid sharding and 2-d parallelism:

    mesh = init_device_mesh("cpu", (2, 4), mesh_dim_names=("replicate", "shard"))
    model = FSDP(model, device_mesh=mesh, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    dist.all_reduce(t, group=mesh.get_group("shard"))    # over this rank's row: the 4 ranks sharing its replica

Making a mesh is a collective: every rank makes it, with the same layout, and for each dimension every rank
makes the group of every row along it (`new_group`'s rule: the same groups in the same order on every rank),
keeping the one it is in. A row of all the launch's ranks is the launch's own group (`group.WORLD`). A rank
outside the mesh makes the groups too (so that its later groups are named alike) and keeps none: its
`get_coordinate()` is None, as torch's. A sub-mesh (`mesh["shard"]`) takes its parent's groups, as torch's, and
makes none.
"""

import math

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.distributed import loop
from distgraph.distributed.subgroups import new_subgroup
from distgraph.errors import ConfigError


class DeviceMesh:
    """torch's DeviceMesh: `mesh` (nested lists, an array or a tensor of the launch's ranks) → one process group
    per dimension for this rank (see the module doc)."""

    def __init__(self, device_type, mesh, *, mesh_dim_names=None, _groups=None):
        try:
            ranks = np.asarray(mesh.numpy() if isinstance(mesh, Tensor) else mesh)
        except ValueError:  # (ragged nested lists)
            ranks = np.asarray([])
        if ranks.dtype.kind not in "iu" or ranks.ndim == 0 or ranks.size == 0:
            raise ConfigError(f"DeviceMesh: mesh must be a non-empty n-d array of ranks, got {mesh!r}")
        world = loop.world_size()
        if len(set(ranks.ravel().tolist())) != ranks.size or not (0 <= ranks.min() and ranks.max() < world):
            raise ConfigError(f"DeviceMesh: mesh {ranks.tolist()} must hold distinct ranks of the launch's {world}")
        names = tuple(mesh_dim_names) if mesh_dim_names is not None else None
        if names is not None and (len(names) != ranks.ndim or len(set(names)) != len(names)):
            raise ConfigError(
                f"DeviceMesh: mesh_dim_names {names} must name each of the mesh's {ranks.ndim} dimensions once"
            )
        self.device_type, self.mesh_dim_names, self._ranks = str(device_type), names, ranks.astype(np.int64)
        self._groups = _groups if _groups is not None else [self._make_group(d) for d in range(ranks.ndim)]

    def _make_group(self, dim):
        """This rank's group along `dim`, every row's group made (in one order on every rank)."""
        rows = np.moveaxis(self._ranks, dim, -1).reshape(-1, self._ranks.shape[dim])
        world, me, mine = loop.world_size(), loop._context.launch_rank(), None
        for row in rows.tolist():
            if sorted(row) == list(range(world)):
                from distgraph.distributed.process_group import group

                made = group.WORLD
            else:
                made = new_subgroup(row, world)
            mine = made if me in row else mine
        return mine

    # ---- the layout ----------------------------------------------------------------------------------------
    @property
    def mesh(self):
        """The ranks, as torch's tensor of them."""
        return Tensor(self._ranks.copy())

    @property
    def ndim(self):
        return self._ranks.ndim

    @property
    def shape(self):
        return tuple(self._ranks.shape)

    def size(self, mesh_dim=None):
        return self._ranks.size if mesh_dim is None else self._ranks.shape[self._dim(mesh_dim)]

    def get_rank(self):
        """This rank in the launch (torch's: the global rank)."""
        return loop._context.launch_rank()

    def get_coordinate(self):
        """This rank's index along each dimension (None outside the mesh), as torch's tuple."""
        where = np.argwhere(self._ranks == self.get_rank())
        return tuple(int(i) for i in where[0]) if len(where) else None

    def get_local_rank(self, mesh_dim=None):
        """This rank's rank in the group along `mesh_dim` (its groups hold their ranks sorted, as torch's)."""
        group = self.get_group(mesh_dim)
        if group is None:
            raise ConfigError(f"DeviceMesh: this rank ({self.get_rank()}) is not in the mesh {self._ranks.tolist()}")
        return group.rank() if hasattr(group, "ranks") else self.get_rank()

    # ---- the groups ----------------------------------------------------------------------------------------
    def get_group(self, mesh_dim=None):
        """The process group of this rank's row along `mesh_dim` (an index or a name; optional for a 1-d mesh)."""
        return self._groups[self._dim(mesh_dim)]

    def get_all_groups(self):
        return list(self._groups)

    def member_groups(self, what):
        """Its groups along each dimension, for what runs over the mesh (DDP, FSDP, tensor parallelism): a rank
        outside the mesh, which holds none, is refused by name (`what`)."""
        if self.get_coordinate() is None:
            raise ConfigError(f"{what}: this rank ({self.get_rank()}) is not in the device_mesh {self!r}")
        return list(self._groups)

    def __getitem__(self, names):
        """The sub-mesh of the dimensions `names` (one name, or a tuple of them) through this rank: its rows
        along them, with the groups this mesh made."""
        names = (names,) if isinstance(names, str) else tuple(names)
        dims = [self._dim(n, "DeviceMesh[...]", by_name=True) for n in names]
        if len(set(dims)) != len(dims):
            raise ConfigError(f"DeviceMesh[...]: each dimension may be named once, got {names}")
        coordinate = self.get_coordinate()
        if coordinate is None:
            raise ConfigError(
                f"DeviceMesh[...]: this rank ({self.get_rank()}) is not in the mesh {self._ranks.tolist()}"
            )
        index = tuple(slice(None) if d in dims else coordinate[d] for d in range(self.ndim))
        ranks = np.moveaxis(self._ranks[index], [sorted(dims).index(d) for d in dims], range(len(dims)))
        return DeviceMesh(self.device_type, ranks, mesh_dim_names=names, _groups=[self._groups[d] for d in dims])

    def _dim(self, mesh_dim, what="DeviceMesh", by_name=False):
        if mesh_dim is None:
            if self.ndim > 1:
                raise ConfigError(
                    f"{what}: Found the DeviceMesh have {self.ndim} dimensions; mesh_dim needs to be specified when "
                    "device_mesh.ndim > 1"
                )
            return 0
        if isinstance(mesh_dim, str):
            if self.mesh_dim_names is None or mesh_dim not in self.mesh_dim_names:
                raise ConfigError(f"{what}: no mesh dimension named {mesh_dim!r} (names: {self.mesh_dim_names})")
            return self.mesh_dim_names.index(mesh_dim)
        if (
            by_name
            or isinstance(mesh_dim, bool)
            or not isinstance(mesh_dim, int)
            or not -self.ndim <= mesh_dim < self.ndim
        ):
            raise ConfigError(f"{what}: mesh_dim {mesh_dim!r} is not a dimension of a {self.ndim}-d mesh")
        return mesh_dim % self.ndim

    def __repr__(self):
        """torch 2.13's: the sizes (named), the device and the strides of the ranks' layout (the ranks themselves
        where they are no strided layout of 0, 1, ...)."""
        sizes = self.shape
        shown = (
            f"({', '.join(f'{n}={s}' for n, s in zip(self.mesh_dim_names, sizes))})"
            if self.mesh_dim_names
            else f"{sizes}"
        )
        strides = tuple(int(s) // self._ranks.itemsize for s in np.ascontiguousarray(self._ranks).strides)
        regular = np.array_equal(self._ranks, np.arange(self._ranks.size).reshape(sizes))
        layout = f"stride={strides}" if regular else f"mesh={self._ranks.tolist()}"
        return f"DeviceMesh({shown}, '{self.device_type}', {layout})"


def init_device_mesh(device_type, mesh_shape, *, mesh_dim_names=None):
    """The launch's ranks 0, 1, ... laid out row-major in `mesh_shape` (its product: the launch's size)."""
    shape = tuple(mesh_shape)
    world = loop.world_size()
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"init_device_mesh: mesh_shape must be positive ints, got {mesh_shape!r}")
    if math.prod(shape) != world:
        raise ConfigError(
            f"init_device_mesh: mesh_shape {shape} holds {math.prod(shape)} ranks, the launch has {world}"
        )
    return DeviceMesh(device_type, np.arange(world).reshape(shape), mesh_dim_names=mesh_dim_names)
