"""torch.distributed.tensor.parallel's tensor parallelism for Linear and Embedding layers, Megatron's way, inside a
launch:

    mesh = dist.init_device_mesh("cpu", (2,))
    parallelize_module(model, mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})

`ColwiseParallel` keeps this rank's rows of the weight (output features) and bias: its input is whole on every
rank, its output this rank's slice of the features (`Shard(-1)`), or joined back (`output_layouts=Replicate()`).
`RowwiseParallel` keeps this rank's columns of the weight (input features): its input is this rank's slice (what
a Colwise layer before it gives, `Shard(-1)`) or a whole one it slices (`input_layouts=Replicate()`); the ranks'
partial outputs are summed and the bias, whole on every rank, added once. So Colwise → (element-wise ops) →
Rowwise needs one all-reduce forward and one backward, as in Megatron-LM. An Embedding is cut as torch cuts it:
Colwise keeps columns of every row (its output this rank's slice of the features), Rowwise keeps a range of ids'
rows (each rank looks up the ids in its range, zeros for the rest, and the ranks' lookups are summed).

Every rank of the group computes the same loss (the outputs are replicated), so a replicated tensor's gradient
is already whole on each rank; the boundaries pair a collective one way with none the other (nn/functional.py's
region functions). The parameters are taken from the group's first rank (torch's src_data_rank=0) and cut
evenly (a dimension the group's size does not divide is refused by name). distgraph has no DTensor: a
parallelized Linear's weight and bias are this rank's plain shards (its state_dict holds them), which the
optimizer steps as any parameter.

Sequence parallelism (Megatron's, arXiv 2205.05198) as torch's plans write it around such a pair:

    {"norm": SequenceParallel(), "fc1": ColwiseParallel(input_layouts=Shard(1)),
     "fc2": RowwiseParallel(output_layouts=Shard(1)), "norm2": SequenceParallel()}

Outside the Colwise → Rowwise pair the activations are cut along the sequence dim: a Rowwise layer with
`output_layouts=Shard(d)` reduce-scatters its partial outputs (this rank keeps its shard of the sum; backward, an
all-gather), a Colwise one with `input_layouts=Shard(d)` all-gathers its input (backward, a reduce-scatter of the
ranks' partial input gradients), and a `SequenceParallel` LayerNorm / RMSNorm / Dropout runs on this rank's shard,
its parameters whole on every rank. A loss on sequence shards is each rank's shard's part, the whole loss their sum
(a last Colwise layer with `output_layouts=Replicate()` gives every rank the whole again); so each rank's gradient
of a replicated parameter used on its shard alone (a norm's, a Shard-output Rowwise layer's bias) is summed over
the group in backward (copy_to_region; torch's DTensor reduces that Partial gradient).
"""

import fnmatch
import types
import warnings

from distgraph.autograd.grad_mode import no_grad
from distgraph.distributed import loop
from distgraph.distributed.nn import functional as regions
from distgraph.distributed.subgroups import run_over
from distgraph.distributed.tensor import Replicate, Shard
from distgraph.errors import ConfigError, InputRangeError, ShapeError
from distgraph.nn.linear import Linear
from distgraph.nn.parameter import Parameter

__all__ = ["ColwiseParallel", "RowwiseParallel", "SequenceParallel", "parallelize_module"]


class ParallelStyle:
    """What a plan maps a module to; `_apply(module, group)` shards it and gives it its style's forward, a method
    bound to it (so a deep copy of the module, as AveragedModel makes, runs on the copy's own shards)."""

    def __init__(self, *, input_layouts=None, output_layouts=None, use_local_output=True):
        if not use_local_output:
            raise ConfigError(
                f"{type(self).__name__}: use_local_output=False asks for a DTensor, which distgraph has not"
            )
        self.input_layouts, self.output_layouts = input_layouts, output_layouts

    def _layout(self, given, default, allowed, what, sequence=False):
        """The layout `given` (None: `default`) if `allowed`, or with `sequence` a Shard(d) of a dim d >= 0."""
        layout = given if given is not None else default
        if isinstance(layout, tuple | list) and len(layout) == 1:
            layout = layout[0]
        if layout in allowed or sequence and isinstance(layout, Shard) and layout.dim >= 0:
            return layout
        also = " or Shard(d) of a sequence dim d >= 0" if sequence else ""
        raise ConfigError(f"{type(self).__name__}: {what} must be one of {allowed}{also}, got {given!r}")

    def __repr__(self):
        return f"{type(self).__name__}()"


class ColwiseParallel(ParallelStyle):
    def _apply(self, module, group, name=""):
        given = self._layout(self.input_layouts, Replicate(), (Replicate(),), "input_layouts", sequence=True)
        output = self._layout(self.output_layouts, Shard(-1), (Shard(-1), Replicate()), "output_layouts")
        embedding = _kind(module, self) == "embedding"
        if embedding and module.max_norm is not None:
            raise ConfigError("ColwiseParallel: an Embedding with max_norm needs its whole rows; it is not split here")
        _shard(module, group, dim=1 if embedding else 0, split_bias=True)
        module._tp = {"group": group, "gather_output": output == Replicate(), **_sequence(given, self, module, name)}
        module.forward = types.MethodType(_colwise_embedding_forward if embedding else _colwise_forward, module)


class RowwiseParallel(ParallelStyle):
    def _apply(self, module, group, name=""):
        given = self._layout(self.input_layouts, Shard(-1), (Shard(-1), Replicate()), "input_layouts")
        output = self._layout(self.output_layouts, Replicate(), (Replicate(),), "output_layouts", sequence=True)
        embedding = _kind(module, self) == "embedding"
        if embedding and (module.max_norm is not None or module.scale_grad_by_freq):
            raise ConfigError(
                "RowwiseParallel: an Embedding with max_norm or scale_grad_by_freq is not split by ids here (each rank "
                "would renormalise or count the other ranks' ids as its own)"
            )
        lo = _shard(module, group, dim=0 if embedding else 1, split_bias=False)
        module._tp = {"group": group, **_sequence(output, self, module, name)}
        if embedding:  # its ids are wanted whole (torch's desired Replicate): a Shard(-1) input is gathered
            module._tp.update(gather_input=given == Shard(-1), first=lo)
            module.forward = types.MethodType(_rowwise_embedding_forward, module)
        else:
            module._tp.update(split_input=given == Replicate())
            module.forward = types.MethodType(_rowwise_forward, module)


class SequenceParallel(ParallelStyle):
    """A LayerNorm, RMSNorm or Dropout run on this rank's shard of the sequence (dim `sequence_dim`), its parameters
    whole on every rank (the group's first rank's) and their gradients summed over the group in backward; its output
    is this rank's shard. Its input is this rank's shard, as torch takes a plain tensor; `input_layouts=Replicate()`
    (distgraph's: torch does so for a replicated DTensor) takes the whole and cuts it (backward: the shards'
    gradients joined). `use_local_output=False` is torch's default here, so it is taken, not refused as the other
    styles refuse it: with no DTensor, both give the local shard, which the next style (`input_layouts=Shard(1)`)
    takes."""

    def __init__(self, *, sequence_dim=1, use_local_output=False, input_layouts=None):
        super().__init__(input_layouts=input_layouts)
        self.sequence_dim, self.use_local_output = sequence_dim, use_local_output

    def _apply(self, module, group, name=""):
        from distgraph.nn.dropout import Dropout
        from distgraph.nn.normalization import LayerNorm, RMSNorm

        forwards = {LayerNorm: _layer_norm_forward, RMSNorm: _rms_norm_forward, Dropout: _dropout_forward}
        kind = next((k for k in forwards if isinstance(module, k)), None)
        if kind is None:
            raise ConfigError(
                f"SequenceParallel: only nn.LayerNorm, nn.RMSNorm and nn.Dropout run on a sequence shard here, got "
                f"{type(module).__name__}" + (f" {name!r}" if name else "")
            )
        sharded = Shard(self.sequence_dim)
        given = self._layout(self.input_layouts, sharded, (sharded, Replicate()), "input_layouts")
        params = list(module.parameters())
        if params:  # (torch assumes they are equal, its ones / zeros init; here the first rank's)
            with no_grad():
                run_over(group, loop.broadcast, params, 0)
        module._tp = {"group": group, "split_input": given == Replicate(), **_sequence(sharded, self, module, name)}
        module.forward = types.MethodType(forwards[kind], module)

    def __repr__(self):
        return f"SequenceParallel(sequence_dim={self.sequence_dim})"


def _kind(module, style):
    from distgraph.nn.sparse import Embedding

    if isinstance(module, Linear):
        return "linear"
    if isinstance(module, Embedding):
        return "embedding"
    raise ConfigError(
        f"{type(style).__name__}: only nn.Linear and nn.Embedding are parallelized here, got {type(module).__name__}"
    )


def _colwise_forward(self, input):
    """A whole input (its partial gradients summed in backward) or sequence shards gathered (reduce-scattered)."""
    group, dim = self._tp["group"], self._tp["sequence"]
    if dim is None:
        x = regions.copy_to_region(input, group)
    else:
        x = regions.gather_sequence(input, _before_features(self, input, dim, "input"), group)
    y = _linear(x, self.weight, self.bias)
    return regions.gather_last_dim(y, group) if self._tp["gather_output"] else y


def _rowwise_forward(self, input):
    """The partial products summed first (or reduce-scattered along the sequence); the bias, whole on every rank,
    added once (to a sequence shard: its gradient summed over the group)."""
    group = self._tp["group"]
    local = regions.split_last_dim(input, group) if self._tp["split_input"] else input
    y = _summed(self, _linear(local, self.weight, None))
    if self.bias is None:
        return y
    return y + (self.bias if self._tp["sequence"] is None else regions.copy_to_region(self.bias, group))


def _colwise_embedding_forward(self, input):
    """This rank's columns of every id's row (ids have no gradient: nothing to sum in backward)."""
    from distgraph.nn import functional as F

    ids = input if self._tp["sequence"] is None else _gathered_ids(self, input)
    y = F.embedding(ids, self.weight, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq)
    return regions.gather_last_dim(y, self._tp["group"]) if self._tp["gather_output"] else y


def _rowwise_embedding_forward(self, input):
    """Each rank looks up the ids in its rows (zeros for the others' ids); the ranks' lookups summed."""
    from distgraph.nn import functional as F

    group, lo, rows = self._tp["group"], self._tp["first"], self.weight.shape[0]
    ids = regions.gather_last_dim(input, group) if self._tp["gather_input"] else input
    total = rows * (loop.world_size() if group is None else group.size())
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= total):
        raise InputRangeError(
            f"Embedding: index out of range in self (ids {int(ids.min())}..{int(ids.max())}, {total} rows)"
        )
    mine = (ids >= lo) & (ids < lo + rows)
    local = (ids - lo) * mine  # (another rank's id looks up row 0, then is zeroed)
    padding = self.padding_idx - lo if self.padding_idx is not None and lo <= self.padding_idx < lo + rows else None
    y = F.embedding(local, self.weight, padding)
    return _summed(self, y * mine.unsqueeze(-1).to(y.dtype))


def _sequence(layout, style, module, name):
    """A module's `_tp` entries for a sequence-cut input or output: `sequence`, its dim (None: whole), and `where`,
    the style and module as errors name them."""
    where = f"{type(style).__name__}: {type(module).__name__}" + (f" {name!r}" if name else "")
    return {"sequence": layout.dim if isinstance(layout, Shard) else None, "where": where}


def _before_features(self, tensor, dim, role):
    """`dim`, checked to be a dim of `tensor` before its last (the features) — a Linear's sequence dim."""
    if dim >= tensor.ndim - 1:
        raise ShapeError(
            f"{self._tp['where']}: its {role} of shape {tuple(tensor.shape)} has no sequence dim {dim} before its "
            "features (the last dim)"
        )
    return dim


def _even(self, tensor, dim, role):
    """`dim`, checked to split evenly over the group (each rank's shard of `tensor` along it)."""
    group = self._tp["group"]
    size = loop.world_size() if group is None else group.size()
    if tensor.shape[dim] % size:
        raise ShapeError(
            f"{self._tp['where']}: its {role} of shape {tuple(tensor.shape)} does not split evenly over {size} ranks "
            f"along its sequence dim {dim}"
        )
    return dim


def _summed(self, partial):
    """The ranks' partial outputs summed: whole on every rank, or (output_layouts=Shard(d)) this rank's shard."""
    dim = self._tp["sequence"]
    if dim is None:
        return regions.reduce_from_region(partial, self._tp["group"])
    dim = _even(self, partial, _before_features(self, partial, dim, "output"), "output")
    return regions.reduce_scatter_sequence(partial, dim, self._tp["group"])


def _gathered_ids(self, ids):
    """Sequence shards of ids joined (ids have no gradient)."""
    dim = self._tp["sequence"]
    if dim >= ids.ndim:
        raise ShapeError(f"{self._tp['where']}: its ids of shape {tuple(ids.shape)} have no sequence dim {dim}")
    return regions.gather_sequence(ids, dim, self._tp["group"])


def _layer_norm_forward(self, input):
    from distgraph.nn import functional as F

    x, (weight, bias) = _sequence_shard(self, input), _replicated(self, self.weight, self.bias)
    return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


def _rms_norm_forward(self, input):
    from distgraph.nn import functional as F

    x, (weight,) = _sequence_shard(self, input), _replicated(self, self.weight)
    return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def _dropout_forward(self, input):
    """Dropout on this rank's shard with this rank's part of one mask drawn for the whole sequence. Ranks seeded
    alike draw the same whole mask, so the shards together are dropout on the whole tensor; a mask per shard from
    like-seeded generators would repeat one pattern along the sequence (torch's DTensor offsets its generator per
    shard for the same reason)."""
    from distgraph.nn.functional.layers import _check_p, _masked, dropout
    from distgraph.ops.layers import dropout_mask

    shard = _sequence_shard(self, input)
    _check_p(self.p, "dropout")
    if not self.training or self.p in (0, 1):
        return dropout(shard, self.p, self.training, self.inplace)
    dim, group = self._tp["sequence"] % shard.ndim, self._tp["group"]
    rank, world = run_over(group, loop.rank), run_over(group, loop.world_size)
    whole = list(shard.shape)
    whole[dim] *= world
    mask = dropout_mask(shard, self.p, whole, 1.0 / (1 - self.p))
    index = (slice(None),) * dim + (slice(rank * shard.shape[dim], (rank + 1) * shard.shape[dim]),)
    return _masked(shard, mask[index], self.inplace, "dropout")


def _sequence_shard(self, input):
    """This rank's shard of the sequence: `input` itself, or (input_layouts=Replicate()) its cut of it; the
    sequence dim checked to lie before the dims a norm normalizes."""
    dim, normalized = self._tp["sequence"], len(getattr(self, "normalized_shape", ()))
    if not -input.ndim <= dim < input.ndim or dim % input.ndim >= input.ndim - normalized:
        raise ShapeError(
            f"{self._tp['where']}: its input of shape {tuple(input.shape)} has no sequence dim {dim}"
            + (f" before the {normalized} dim(s) it normalizes" if normalized else "")
        )
    if not self._tp["split_input"]:
        return input
    return regions.split_sequence(input, _even(self, input, dim, "input"), self._tp["group"])


def _replicated(self, *params):
    """Parameters used whole on this rank's shard: their gradients (from this shard only) summed over the group."""
    return [None if p is None else regions.copy_to_region(p, self._tp["group"]) for p in params]


def _linear(x, weight, bias):
    from distgraph.nn import functional as F

    return F.linear(x, weight, bias)


def _shard(module, group, dim, split_bias):
    """The group's first rank's weight and bias on every rank, then this rank's even slice of the weight along
    `dim` (and of the bias, with `split_bias`) → where this rank's slice starts along `dim`."""
    size = loop.world_size() if group is None else group.size()
    rank = loop.rank() if group is None else group.rank()
    bias = getattr(module, "bias", None)
    cuts = {"weight": dim, **({"bias": 0} if split_bias and bias is not None else {})}
    for name, d in cuts.items():
        p = getattr(module, name)
        if p.shape[d] % size:
            raise ConfigError(
                f"{type(module).__name__}: {name} of shape {tuple(p.shape)} does not split evenly over {size} ranks "
                f"along dim {d}"
            )
    with no_grad():
        run_over(group, loop.broadcast, [p for p in (module.weight, bias) if p is not None], 0)
        for name, d in cuts.items():
            p = getattr(module, name)
            k = p.shape[d] // size
            piece = p.array[(slice(None),) * d + (slice(rank * k, (rank + 1) * k),)].copy()
            module.register_parameter(name, Parameter(_tensor(piece, p), requires_grad=p.requires_grad))
    return rank * (module.weight.shape[dim])


def _tensor(array, like):
    from distgraph.autograd.tensor import Tensor

    return Tensor(array, device=like.device)


def parallelize_module(module, device_mesh=None, parallelize_plan=None, *, src_data_rank=0):
    """Apply `parallelize_plan` ({module name: style}, torch's keys: one dotted segment per token, each token an
    fnmatch pattern, "" the module itself; or one style for `module`) over the 1-d `device_mesh`'s group (None:
    every rank of the launch) → the module, changed in place."""
    if src_data_rank != 0:
        raise ConfigError(
            f"parallelize_module: src_data_rank must be 0 (the group's first rank), got {src_data_rank!r}"
        )
    group = None
    if device_mesh is not None:
        if device_mesh.ndim != 1:
            raise ConfigError(f"parallelize_module: a 1-d device_mesh is taken here, got {device_mesh!r}")
        (group,) = device_mesh.member_groups("parallelize_module")
        group = group if hasattr(group, "ranks") else None  # (the launch's own)
    if parallelize_plan is None:
        warnings.warn("parallelize_module: no parallelize_plan; the module is left as it is", stacklevel=2)
        return module
    if isinstance(parallelize_plan, ParallelStyle):
        parallelize_plan._apply(module, group)
        return module
    if not isinstance(parallelize_plan, dict):
        raise ConfigError(
            f"parallelize_module: parallelize_plan must be a dict or a ParallelStyle, got {parallelize_plan!r}"
        )
    names, done = dict(module.named_modules()), {}
    for pattern, style in parallelize_plan.items():
        matched = [n for n in names if _matches(n, pattern)]
        if not matched:
            raise ConfigError(f"parallelize_module: no submodule of the model is named {pattern!r}")
        for name in matched:
            if name in done:
                raise ConfigError(f"parallelize_module: {name!r} is matched by both {done[name]!r} and {pattern!r}")
            done[name] = pattern
            style._apply(names[name], group, name)
    return module


def _matches(name, pattern):
    """Whether plan key `pattern` names the submodule `name` (segment by segment, as torch's)."""
    parts, tokens = name.split(".") if name else [], pattern.split(".") if pattern else []
    return len(parts) == len(tokens) and all(fnmatch.fnmatchcase(p, t) for p, t in zip(parts, tokens))
