"""torch.distributed.tensor.parallel's tensor parallelism for Linear layers, Megatron's way, inside a launch:

    mesh = dist.init_device_mesh("cpu", (2,))
    parallelize_module(model, mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})

`ColwiseParallel` keeps this rank's rows of the weight (output features) and bias: its input is whole on every
rank, its output this rank's slice of the features (`Shard(-1)`), or joined back (`output_layouts=Replicate()`).
`RowwiseParallel` keeps this rank's columns of the weight (input features): its input is this rank's slice (what
a Colwise layer before it gives, `Shard(-1)`) or a whole one it slices (`input_layouts=Replicate()`); the ranks'
partial outputs are summed and the bias, whole on every rank, added once. So Colwise → (element-wise ops) →
Rowwise needs one all-reduce forward and one backward, as in Megatron-LM.

Every rank of the group computes the same loss (the outputs are replicated), so a replicated tensor's gradient
is already whole on each rank; the boundaries pair a collective one way with none the other (nn/functional.py's
region functions). The parameters are taken from the group's first rank (torch's src_data_rank=0) and cut
evenly (a dimension the group's size does not divide is refused by name). distgraph has no DTensor: a
parallelized Linear's weight and bias are this rank's plain shards (its state_dict holds them), which the
optimizer steps as any parameter.
"""

import fnmatch

from distgraph.autograd.grad_mode import no_grad
from distgraph.distributed import loop
from distgraph.distributed.nn import functional as regions
from distgraph.distributed.tensor import Replicate, Shard
from distgraph.errors import ConfigError
from distgraph.nn.linear import Linear
from distgraph.nn.parameter import Parameter

__all__ = ["ColwiseParallel", "RowwiseParallel", "parallelize_module"]


class ParallelStyle:
    """What a plan maps a module to; `_apply(module, group)` shards it and wraps its forward."""

    def __init__(self, *, input_layouts=None, output_layouts=None, use_local_output=True):
        self.input_layouts, self.output_layouts, self.use_local_output = input_layouts, output_layouts, use_local_output

    def _layout(self, given, default, allowed, what):
        layout = given if given is not None else default
        if isinstance(layout, tuple | list) and len(layout) == 1:
            layout = layout[0]
        if layout not in allowed:
            raise ConfigError(f"{type(self).__name__}: {what} must be one of {allowed}, got {given!r}")
        return layout

    def __repr__(self):
        return f"{type(self).__name__}()"


class ColwiseParallel(ParallelStyle):
    def _apply(self, module, group):
        self._layout(self.input_layouts, Replicate(), (Replicate(),), "input_layouts")
        output = self._layout(self.output_layouts, Shard(-1), (Shard(-1), Replicate()), "output_layouts")
        _shard(module, group, dim=0, split_bias=True, style=self)

        def forward(x):
            y = _linear(regions.copy_to_region(x, group), module.weight, module.bias)
            return regions.gather_last_dim(y, group) if output == Replicate() else y

        module.forward = forward


class RowwiseParallel(ParallelStyle):
    def _apply(self, module, group):
        given = self._layout(self.input_layouts, Shard(-1), (Shard(-1), Replicate()), "input_layouts")
        self._layout(self.output_layouts, Replicate(), (Replicate(),), "output_layouts")
        _shard(module, group, dim=1, split_bias=False, style=self)

        def forward(x):  # the partial products summed first; the bias, whole on every rank, added once
            local = regions.split_last_dim(x, group) if given == Replicate() else x
            y = regions.reduce_from_region(_linear(local, module.weight, None), group)
            return y if module.bias is None else y + module.bias

        module.forward = forward


def _linear(x, weight, bias):
    from distgraph.nn import functional as F

    return F.linear(x, weight, bias)


def _shard(module, group, dim, split_bias, style):
    """The group's first rank's weight and bias on every rank, then this rank's even slice of the weight along
    `dim` (and of the bias, with `split_bias`)."""
    if not isinstance(module, Linear):
        raise ConfigError(f"{type(style).__name__}: only nn.Linear is parallelized here, got {type(module).__name__}")
    size = loop.world_size() if group is None else group.size()
    rank = loop.rank() if group is None else group.rank()
    cuts = {"weight": dim, **({"bias": 0} if split_bias and module.bias is not None else {})}
    for name, d in cuts.items():
        p = getattr(module, name)
        if p.shape[d] % size:
            raise ConfigError(
                f"{type(style).__name__}: {name} of shape {tuple(p.shape)} does not split evenly over {size} ranks "
                f"along dim {d}"
            )
    with no_grad():
        _in_group(group, loop.broadcast, [p for p in (module.weight, module.bias) if p is not None], 0)
        for name, d in cuts.items():
            p = getattr(module, name)
            k = p.shape[d] // size
            piece = p.array[(slice(None),) * d + (slice(rank * k, (rank + 1) * k),)].copy()
            module.register_parameter(name, Parameter(_tensor(piece, p), requires_grad=p.requires_grad))


def _tensor(array, like):
    from distgraph.autograd.tensor import Tensor

    return Tensor(array, device=like.device)


def _in_group(group, fn, *args):
    return fn(*args) if group is None else group.run(fn, *args)


def parallelize_module(module, device_mesh=None, parallelize_plan=None, *, src_data_rank=0):
    """Apply `parallelize_plan` ({module name, with * wildcards: style}, or one style for `module` itself) over
    the 1-d `device_mesh`'s group (None: every rank of the launch) → the module, changed in place."""
    if src_data_rank != 0:
        raise ConfigError(
            f"parallelize_module: src_data_rank must be 0 (the group's first rank), got {src_data_rank!r}"
        )
    group = None
    if device_mesh is not None:
        if device_mesh.ndim != 1:
            raise ConfigError(f"parallelize_module: a 1-d device_mesh is taken here, got {device_mesh!r}")
        group = device_mesh.get_group()
        group = group if hasattr(group, "ranks") else None  # (the launch's own)
    if isinstance(parallelize_plan, ParallelStyle):
        parallelize_plan._apply(module, group)
        return module
    if not isinstance(parallelize_plan, dict):
        raise ConfigError(
            f"parallelize_module: parallelize_plan must be a dict or a ParallelStyle, got {parallelize_plan!r}"
        )
    names = dict(module.named_modules())
    for pattern, style in parallelize_plan.items():
        matched = [n for n in names if n and fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(f"parallelize_module: no submodule of the model is named {pattern!r}")
        for name in matched:
            style._apply(names[name], group)
    return module
