"""torch.distributed's process-group surface inside a `dg.distributed.launch` function, so a script written
for torchrun runs unchanged under `distgraph run --workers N script.py` (or alone, as rank 0 of 1):

    dist.init_process_group("gloo")
    local_rank = int(os.environ["LOCAL_RANK"])
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=dist.group.WORLD, async_op=False)
    dist.destroy_process_group()

- `init_process_group(backend, ..., world_size, rank)` joins nothing: the launch already made the group; it
  checks that world_size and rank, when given, are the launch's (else a ConfigError naming both) and that it
  is not called twice (torch's error); `destroy_process_group` ends that. The ranks see torchrun's variables
  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT & co.
  (launcher.py lists them; loop.py sets them for the function's run).
- Every collective takes torch's `group` (None or `group.WORLD`: the launch's ranks; or a subgroup from
  `new_group(ranks)`, subgroups.py) and `async_op` (→ a completed `Work`: distgraph's collectives have finished
  when they return). `get_rank(group)`, `get_world_size(group)`, `get_process_group_ranks`, `get_global_rank`
  and `get_group_rank` place a rank in a group as torch's do.
- `get_backend()` names the transport the launch chose: "shm" (one node), "gloo", "nccl".
- torch's object collectives: `broadcast_object_list`, `gather_object`, `scatter_object_list`,
  `all_gather_object(object_list, obj)` (Horovod's one-argument form too), and `all_gather_into_tensor`,
  `monitored_barrier`.
"""

import functools
import inspect
import os

from distgraph.backend import cuda_is_available
from distgraph.distributed import collectives, loop
from distgraph.distributed.allreduce import gloo_available
from distgraph.distributed.loop import _context
from distgraph.distributed.subgroups import SubGroup, new_subgroup, place_in
from distgraph.errors import ConfigError, DTypeError, ShapeError

BACKENDS = ("gloo", "nccl", "mpi", "ucc", "shm", "cpu:gloo,cuda:nccl")


class Backend:
    """torch.distributed.Backend's names."""

    GLOO, NCCL, MPI, UCC = "gloo", "nccl", "mpi", "ucc"


class ProcessGroup:
    """The launch's one group of ranks (torch's default group)."""

    def rank(self):
        return loop.rank()

    def size(self):
        return loop.world_size()

    def __repr__(self):
        return f"ProcessGroup(WORLD, rank {loop.rank()} of {loop.world_size()})"


class group:  # noqa: N801  (torch's name)
    WORLD = ProcessGroup()


GroupMember = group


class Work:
    """What a collective called with async_op=True returns. It has already finished: `wait()` is True."""

    def __init__(self, result):
        self._result = result if isinstance(result, list) else [result]

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return True

    def is_success(self):
        return True

    def result(self):
        return self._result

    def get_future(self):
        return _Done(self._result)


class _Done:
    """torch.futures.Future of a finished collective: what a DDP comm hook chains (`fut.then(fn)`)."""

    def __init__(self, value):
        self._value = value

    def wait(self):
        return self._value

    def value(self):
        return self._value

    def done(self):
        return True

    def then(self, callback):
        """A future of callback(this one), as torch's (the collective is done: it runs now)."""
        return _Done(callback(self))

    def add_done_callback(self, callback):
        callback(self)

    def set_result(self, result):
        self._value = result


def _check_group(g, what, subgroups=False):
    """None for the launch's group, else the subgroup `g` (where `subgroups` may be given); anything else is
    refused by name."""
    if g is None or g is group.WORLD:
        return None
    if subgroups and isinstance(g, SubGroup):
        return g
    raise ConfigError(
        f"{what}: group must be the launch's (None or dist.group.WORLD)"
        + (" or one of dist.new_group's" if subgroups else "")
        + f", got {g!r}"
    )


def _checked(name, fn, op, /, *args, **kwargs):
    """`fn(*args, **kwargs)` run as the user's collective `name` with reduce op `op`, posted to the group's call
    board before and compared with the peers' after (call_board.py: ranks that call different collectives, or one
    with another reduce op, raise at once instead of reading each other's data wrongly or waiting out the
    timeout). A group without a board (one rank; gloo, NCCL) runs it as it is."""
    board = getattr(loop._context["comm"], "board", None)  # (a group of one rank has none)
    if board is None:
        return fn(*args, **kwargs)
    board.post_collective(name, COLLECTIVE_NAMES, op)
    out = fn(*args, **kwargs)
    board.verify_collective()
    return out


def torch_collective(fn, extras=("group", "async_op"), name=None):
    """`fn` with torch's trailing parameters `extras` (after fn's own, by position or by name): `group` checked
    (a subgroup runs fn over its members: a rank outside it returns None at once, and src / dst name global
    ranks; torch's `group_src` / `group_dst` name the root by its rank in the group instead), `async_op` → a
    completed Work, else None where fn worked in place (torch's `if work is not None: work.wait()` idiom; a
    form that makes a new value, Horovod's all_gather(tensor), returns it), the rest (barrier's device_ids, an object collective's device) accepted: they choose
    nothing here."""
    signature = inspect.signature(fn)
    own = len(signature.parameters)
    roots = [name for name in ("src", "dst") if name in signature.parameters]
    collective = name or fn.__name__
    op_at = list(signature.parameters).index("op") if "op" in signature.parameters else None
    op_default = None if op_at is None else signature.parameters["op"].default

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if len(args) > own + len(extras):
            raise TypeError(
                f"{fn.__name__}() takes at most {own + len(extras)} positional arguments ({len(args)} given)"
            )
        named = dict(zip(extras, args[own:]))
        for key in extras:
            if key in kwargs:
                named[key] = kwargs.pop(key)
        for name in roots:  # torch's group_src / group_dst: the root's rank in the group → its global rank
            if f"group_{name}" in kwargs:
                in_group = kwargs.pop(f"group_{name}")
                if signature.bind_partial(*args[:own], **kwargs).arguments.get(name) is not None:
                    raise ConfigError(f"{fn.__name__}: Can not specify both group_{name} and {name} (torch's rule)")
                kwargs[name] = get_global_rank(named.get("group"), in_group)
        sub = _check_group(named.get("group"), fn.__name__, subgroups=True)
        op = None if op_at is None else kwargs.get("op", args[op_at] if len(args) > op_at else op_default)
        if sub is None:
            out = _checked(collective, fn, op, *args[:own], **kwargs)
        elif sub.rank() < 0:
            out = None  # torch: a rank outside the group takes no part
        else:
            bound = signature.bind(*args[:own], **kwargs)
            for name in roots:
                given = bound.arguments.get(name, signature.parameters[name].default)
                bound.arguments[name] = sub.group_rank(given, fn.__name__)
            out = sub.run(_checked, collective, fn, op, *bound.args, **bound.kwargs)
        if named.get("async_op"):
            return Work(out)
        first = args[0] if args else kwargs.get(next(iter(signature.parameters), None))
        return None if out is first else out  # in place, as torch's: None (Horovod's forms return a new value)

    return call


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None):  # fmt: skip
    """The launch's group, checked against what the script asks for (see the module's docstring)."""
    if _context.get("pg"):
        raise ConfigError("init_process_group: trying to initialize the default process group twice!")
    if backend is not None and str(backend).lower() not in BACKENDS:
        raise ConfigError(f"init_process_group: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    outside = "" if loop.is_launched() else (
        " (outside dg.distributed.launch this process is rank 0 of 1: start the ranks with "
        "`distgraph run --workers N script.py` or dg.distributed.launch)"
    )  # fmt: skip
    for name, asked, have in (("world_size", world_size, loop.world_size()), ("rank", rank, loop.rank())):
        if asked not in (-1, None) and asked != have:
            raise ConfigError(f"init_process_group: {name}={asked}, but this process's {name} is {have}{outside}")
    _context["pg"] = str(backend).lower() if backend is not None else True


def destroy_process_group(group=None):
    sub = _check_group(group, "destroy_process_group", subgroups=True)
    if sub is not None:
        sub.close()
    else:
        _context["pg"] = False


def is_initialized():
    """After init_process_group, until destroy_process_group; inside a launch also before it (the group
    exists), as a script that checks before it calls init expects."""
    pg = _context.get("pg")
    return bool(pg) if pg is not None else loop.is_launched()


def get_backend(group=None):
    _check_group(group, "get_backend", subgroups=True)
    if not is_initialized():
        raise ConfigError(
            "Default process group has not been initialized, please make sure to call init_process_group."
        )
    asked = _context.get("pg")
    return _context.get("backend") or (asked if isinstance(asked, str) else "gloo")


def is_available():
    return True


def is_gloo_available():
    return gloo_available()


def is_nccl_available():
    return cuda_is_available()


def is_mpi_available():
    return False


def new_group(ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False,
              group_desc=None, device_id=None):  # fmt: skip
    """The launch's group when `ranks` is None or all of them, else a subgroup of those ranks (subgroups.py).
    As torch asks, every rank calls it, with the same ranks, in the same order; with use_local_synchronization=True
    only the members do (in the same order among themselves)."""
    world = loop.world_size()
    if ranks is None or sorted(ranks) == list(range(world)):
        return group.WORLD
    return new_subgroup(ranks, world, local=bool(use_local_synchronization))


def new_subgroups(group_size=None, group=None, timeout=None, backend=None, pg_options=None, group_desc=None):
    """The launch's ranks cut into consecutive groups of `group_size` → (this rank's group, all of them), as
    torch's (whose default size, the GPUs of a node, is the launch's ranks on this node here)."""
    world = loop.world_size()
    if group is not None:
        raise ConfigError("new_subgroups: group is the launch's (None); subgroups of a subgroup are not supported")
    if group_size is None:  # (every rank must come to the same size: the nodes must hold as many ranks)
        nodes = _context.get("nodes") or [None] * world
        per_node = {nodes.count(n) for n in nodes}
        if len(per_node) > 1:
            raise ConfigError(
                f"new_subgroups: the nodes hold {sorted(per_node)} ranks each, so there is no one default group_size; "
                "pass group_size"
            )
        group_size = per_node.pop()
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or world % group_size:
        raise ConfigError(f"new_subgroups: group_size must divide the launch's {world} ranks, got {group_size!r}")
    return new_subgroups_by_enumeration([list(range(s, s + group_size)) for s in range(0, world, group_size)])


def new_subgroups_by_enumeration(ranks_per_subgroup_list, timeout=None, backend=None, pg_options=None,
                                 group_desc=None):  # fmt: skip
    """A group of each list of ranks (every rank in one at most) → (this rank's group or None, all of them)."""
    lists = [list(r) for r in ranks_per_subgroup_list]
    seen = [r for ranks in lists for r in ranks]
    if not lists or len(seen) != len(set(seen)):
        raise ConfigError(
            f"new_subgroups_by_enumeration: every rank may be in one subgroup at most, got {ranks_per_subgroup_list!r}"
        )
    made = [new_group(ranks) for ranks in lists]
    me = _context.launch_rank()
    mine = next((g for g, ranks in zip(made, lists) if me in ranks), None)
    return mine, made


def get_node_local_rank(fallback_rank=None):
    """This rank's place among the launch's ranks on its node (torchrun's LOCAL_RANK), as torch's."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    if fallback_rank is not None:
        return int(fallback_rank)
    raise ConfigError("get_node_local_rank: LOCAL_RANK is not set (outside a launch) and no fallback_rank was given")


def is_torchelastic_launched():
    """Whether this process is a rank of a launch or of `distgraph run` (torchrun's TORCHELASTIC_RUN_ID is set), as
    torch's."""
    return os.environ.get("TORCHELASTIC_RUN_ID") is not None


def get_rank(group=None):
    """This rank's place in `group` (-1 outside it), as torch's."""
    sub = _check_group(group, "get_rank", subgroups=True)
    return loop.rank() if sub is None else sub.rank()


def get_world_size(group=None):
    sub = _check_group(group, "get_world_size", subgroups=True)
    return loop.world_size() if sub is None else sub.size()


def get_process_group_ranks(group):
    """The global ranks of `group`, in its order."""
    sub = _check_group(group, "get_process_group_ranks", subgroups=True)
    return list(range(loop.world_size())) if sub is None else list(sub.ranks)


def get_global_rank(group, group_rank):
    ranks = get_process_group_ranks(group)
    if not 0 <= group_rank < len(ranks):
        raise ConfigError(f"get_global_rank: group rank {group_rank} is not part of group {ranks}")
    return ranks[group_rank]


def get_group_rank(group, global_rank):
    return place_in(get_process_group_ranks(group), global_rank, "get_group_rank")


def all_gather_into_tensor(output_tensor, input_tensor):
    """Every rank's input, in rank order, into `output_tensor` (concatenated along dim 0, or stacked: any
    shape of world_size × the input's elements, the input's dtype), in place."""
    out, world = output_tensor.array, loop.world_size()
    flat = input_tensor.reshape(-1)
    problem = None
    if out.dtype != input_tensor.array.dtype:  # (torch's words; every rank raises it, naming the rank)
        problem = DTypeError(
            f"all_gather_into_tensor: output tensor must have the same type as input tensor (output {out.dtype}, "
            f"input {input_tensor.array.dtype})"
        )
    gathered = loop._allgather(flat, "all_gather_into_tensor", problem)[0].array
    if out.size != input_tensor.array.size * world or gathered.size != out.size:
        raise ShapeError(
            f"all_gather_into_tensor: output tensor size must be equal to world_size times input tensor size "
            f"(output {tuple(out.shape)}, input {tuple(input_tensor.shape)}, world size {world}; every rank must "
            "pass inputs of the same size)"
        )
    out[...] = gathered.reshape(out.shape)
    return output_tensor


def broadcast_object_list(object_list, src=0):
    """Rank src's objects into every rank's `object_list`, in place."""
    object_list[:] = loop.broadcast_object(list(object_list) if loop.rank() == src else None, src)
    return object_list


def gather_object(obj, object_gather_list=None, dst=0):
    """Every rank's `obj` into rank dst's `object_gather_list` (by rank), in place; the others pass None.
    A rank's bad dst or list raises the same error on every rank (each rank's problem travels with its
    object), so none is left waiting."""
    mine = collectives._root_list_problem("gather_object", dst, object_gather_list, "object_gather_list", "destination")
    gathered = loop.allgather_object((obj, mine))
    problems = [(r, p) for r, (_, p) in enumerate(gathered) if p is not None]
    if problems:
        r, problem = problems[0]
        raise type(problem)(f"{problem} (rank {r})")
    if loop.rank() == dst:
        object_gather_list[:] = [o for o, _ in gathered]
    return object_gather_list


def scatter_object_list(scatter_object_output_list, scatter_object_input_list=None, src=0):
    """Rank src's scatter_object_input_list[r] into rank r's scatter_object_output_list[0], in place."""
    inputs = loop.broadcast_object(scatter_object_input_list if loop.rank() == src else None, src)
    if inputs is None or len(inputs) != loop.world_size():
        raise ConfigError(
            f"scatter_object_list: rank {src}'s scatter_object_input_list must hold one object per rank "
            f"({loop.world_size()}), got {None if inputs is None else len(inputs)}"
        )
    if not scatter_object_output_list:
        raise ConfigError("scatter_object_list: Expected argument scatter_object_output_list to be a list of size at least 1.")  # fmt: skip
    scatter_object_output_list[0] = inputs[loop.rank()]
    return scatter_object_output_list


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """A barrier (every wait already has the launch's timeout, naming what it waited for)."""
    return TORCH_COLLECTIVES["barrier"](group=group)


# torch's collectives with torch's keywords: what dg.distributed.NAME resolves to
_EXTRAS = {  # torch's trailing parameters where they are not (group, async_op)
    "barrier": ("group", "async_op", "device_ids"), "broadcast_object_list": ("group", "device"),
    "gather_object": ("group",), "scatter_object_list": ("group",), "all_gather_object": ("group",),
}  # fmt: skip
TORCH_COLLECTIVES = {
    name: torch_collective(fn, _EXTRAS.get(name, ("group", "async_op")), name)
    for name, fn in {
        "all_reduce": loop.all_reduce, "broadcast": loop.broadcast, "barrier": loop.barrier,
        "all_gather": loop.all_gather, "all_gather_object": loop.all_gather_object, "reduce": collectives.reduce,
        "reduce_scatter": collectives.reduce_scatter, "reduce_scatter_tensor": collectives.reduce_scatter_tensor,
        "all_to_all": collectives.all_to_all, "all_to_all_single": collectives.all_to_all_single,
        "gather": collectives.gather, "scatter": collectives.scatter, "all_gather_into_tensor": all_gather_into_tensor,
        "broadcast_object_list": broadcast_object_list, "gather_object": gather_object,
        "scatter_object_list": scatter_object_list,
    }.items()
}  # fmt: skip
COLLECTIVE_NAMES = tuple(TORCH_COLLECTIVES)  # what a call board record names a collective by (the same on every rank)
