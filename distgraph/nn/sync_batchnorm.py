"""SyncBatchNorm: batch norm whose statistics are those of the whole global batch, across the ranks.

Data-parallel training normalizes each rank's shard by the shard's own mean and variance, which is a
different model from the one trained on the global batch, and a poor one when a shard is small (a few
images per GPU). torch's and Horovod's SyncBatchNorm sum the statistics over the ranks; so does this,
through the process group the distributed worker installs (`ops/collective.py`): in the Trainer's sync
data-parallel workers, in `dg.distributed.launch` functions, or a group given as `process_group`. With
no group, or one rank, or in eval mode, it is BatchNorm (torch falls back the same way).

It is BatchNorm written with a differentiable all-reduce (`all_reduce_sum`), so autograd derives the
synchronized backward itself: the gradient of a shard's input needs sums of the output gradient over every
rank, and those come from the all-reduce's backward. One collective in forward (every rank's count, mean and
squared deviations, combined exactly: `_global_moments`) and one in backward, each of (2 × channels + 1) ×
ranks numbers.
"""

from distgraph.backend import CPU, to_device
from distgraph.errors import ShapeError
from distgraph.nn.functional.layers import normalize_affine, update_running_stats
from distgraph.nn.normalization import _BatchNorm
from distgraph.ops import elementwise as ew
from distgraph.ops import reduction as red
from distgraph.ops.collective import all_reduce_sum, current_group
from distgraph.ops.creation import tensor
from distgraph.ops.regions import pad
from distgraph.ops.shape import cat


class SyncBatchNorm(_BatchNorm):
    """torch.nn.SyncBatchNorm: BatchNorm over (N, C, ...) inputs of any rank ≥ 2, statistics summed over
    the ranks of `process_group` (None: the group of the distributed worker running it, if any)."""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def _check_input(self, input):
        if input.ndim < 2 or (input.shape[1] != self.num_features and self._channels_fixed()):
            raise ShapeError(
                f"SyncBatchNorm({self.num_features}): expected at least 2-D input (N, C, ...) with "
                f"{self.num_features} channels in dim 1, got shape {tuple(input.shape)}"
            )

    def forward(self, input):
        group = self.process_group if self.process_group is not None else current_group()
        if not self.training or group is None or group.world_size <= 1:
            return super().forward(input)
        self._check_input(input)
        return sync_batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, self._momentum(), self.eps, group
        )

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """`module` with every BatchNorm*d in it replaced by a SyncBatchNorm that holds the same Parameter
        objects (an optimizer built on the old module trains the new one) and the same buffers, in the same
        train/eval mode, as torch's."""
        converted = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            converted = cls(
                module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                process_group, bias=module.bias is not None,
            )  # fmt: skip
            for name in ("weight", "bias"):
                converted.register_parameter(name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                converted.register_buffer(name, getattr(module, name))
            converted.training = module.training
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted


def sync_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps, group):
    """Training-mode batch norm over the global batch of `group`'s ranks; updates the running statistics
    (on every rank alike) with the global mean and the global unbiased variance, as torch's."""
    c = input.shape[1]
    shape = (1, c) + (1,) * (input.ndim - 2)
    count, mean, var = _global_moments(input, group)
    if count <= 1:
        raise ShapeError(
            f"SyncBatchNorm: expected more than 1 value per channel over the {group.world_size} ranks when "
            f"training, got {count} (this rank's input {tuple(input.shape)})"
        )
    if running_mean is not None:
        update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return normalize_affine(input, mean.reshape(*shape), var.reshape(*shape), eps, weight, bias, shape)


def _global_moments(input, group):
    """(count, mean, biased variance) per channel of the global batch, from one all-reduce.

    Each rank puts its count, mean and sum of squared deviations at its own offset of a zero row, so the
    sum is their concatenation (torch's all_gather of the same three), and every rank combines them in rank
    order by Chan's formula: M2 = Σ M2ᵣ + Σ nᵣ(meanᵣ − mean)². Exact where E[x²] − E[x]² loses float32
    digits, and one collective each way instead of two (a sum, then the deviations from it)."""
    c, rank, world = input.shape[1], group.rank, group.world_size
    dims = (0, *range(2, input.ndim))
    n = input.numel() // c
    mean_r = ew.div(red.sum(input, dim=dims), max(n, 1))  # an empty shard: zeros, weighed by its count 0
    m2_r = red.sum(ew.square(ew.sub(input, mean_r.reshape(1, c, *(1,) * (input.ndim - 2)))), dim=dims)
    row = cat([tensor([n], dtype=input.dtype, device=input.device), mean_r, m2_r])
    width = 2 * c + 1
    rows = all_reduce_sum(pad(row, (rank * width, (world - rank - 1) * width)), group).reshape(world, width)
    counts = [int(round(float(v))) for v in to_device(rows.array[:, 0], CPU)]
    total = sum(counts)
    means, m2s = rows[:, 1 : c + 1], rows[:, c + 1 :]
    weights = tensor([[k / max(total, 1)] for k in counts], dtype=input.dtype, device=input.device)
    mean = red.sum(ew.mul(means, weights), dim=0)
    spread = red.sum(ew.mul(ew.square(ew.sub(means, mean)), weights), dim=0)  # Σ nᵣ(meanᵣ − mean)² / N
    return total, mean, ew.add(ew.div(red.sum(m2s, dim=0), max(total, 1)), spread)
