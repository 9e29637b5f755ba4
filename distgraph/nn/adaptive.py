"""nn.AdaptiveLogSoftmaxWithLoss (Grave et al., 2016): a log-softmax over many classes, cheap for the frequent ones.

The classes are split by `cutoffs` into a shortlist and tail clusters. The head (a Linear) scores the
shortlist plus one logit per cluster; each cluster's own two-layer projection (in_features ->
in_features // div_value^(i+1) -> cluster size) scores the classes inside it, and a tail class's
log-probability is its cluster's head log-probability plus its log-probability within the cluster.
Training asks for each row's target only, so a cluster's projection runs only on the rows whose target
falls in it. Parameters, their names and their initialization are torch's.
"""

import itertools
from collections import namedtuple

import numpy as np

from distgraph.autograd.tensor import Tensor
from distgraph.errors import IndexOutOfRangeError, ShapeError
from distgraph.nn import functional as F
from distgraph.nn.container import ModuleList, Sequential
from distgraph.nn.linear import Linear
from distgraph.nn.module import Module
from distgraph.ops import reduction as red
from distgraph.ops.indexing import gather, index_select
from distgraph.ops.shape import cat

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])


def _check_cutoffs(cutoffs, n_classes):
    if len(cutoffs) == 0:
        raise ValueError("AdaptiveLogSoftmaxWithLoss: cutoffs should be a sequence of length larger than 0")
    if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
            or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):  # fmt: skip
        raise ValueError(
            "AdaptiveLogSoftmaxWithLoss: cutoffs should be a sequence of unique, positive integers sorted in an "
            f"increasing order, where each value is between 1 and n_classes-1 = {n_classes - 1}; got {cutoffs}"
        )


class AdaptiveLogSoftmaxWithLoss(Module):
    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, device=None, dtype=None):
        super().__init__()
        cutoffs = list(cutoffs)
        _check_cutoffs(cutoffs, n_classes)
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs = cutoffs + [n_classes]
        self.div_value, self.head_bias = div_value, head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        kw = {"device": device, "dtype": dtype}
        self.head = Linear(in_features, self.head_size, bias=head_bias, **kw)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hidden = int(in_features // (div_value ** (i + 1)))
            size = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(Sequential(Linear(in_features, hidden, bias=False, **kw),
                                        Linear(hidden, size, bias=False, **kw)))  # fmt: skip

    def reset_parameters(self):
        self.head.reset_parameters()
        for i2h, h2o in self.tail:
            i2h.reset_parameters()
            h2o.reset_parameters()

    def _check(self, input, target):
        if target.ndim == 1:
            if input.ndim != 2:
                raise ShapeError(f"{type(self).__name__}: a 1-D target expects 2-D input, got {tuple(input.shape)}")
            if input.shape[0] != target.shape[0]:
                raise ShapeError(
                    f"{type(self).__name__}: input {tuple(input.shape)} and target {tuple(target.shape)} should have "
                    "the same size in the batch dimension"
                )
        elif target.ndim == 0:
            if input.ndim != 1:
                raise ShapeError(f"{type(self).__name__}: a 0-D target expects 1-D input, got {tuple(input.shape)}")
        else:
            raise ShapeError(f"{type(self).__name__}: 0-D or 1-D target expected, got {tuple(target.shape)}")
        labels = np.asarray(target.__array__()).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise IndexOutOfRangeError(
                f"{type(self).__name__}: target values should be in [0, {self.n_classes - 1}], but values in range "
                f"[{labels.min()}, {labels.max()}] were found"
            )
        return labels

    def forward(self, input, target):
        """(output, loss): each row's log-probability of its target (N,) and their negated mean."""
        labels = self._check(input, target)
        batched = target.ndim > 0
        if not batched:
            input = input.unsqueeze(0)
        xp, dev = input.device.xp, input.device
        head_logprob = F.log_softmax(self.head(input), dim=1)
        head_index = np.minimum(labels, self.shortlist_size)  # shortlist class, else its cluster's logit
        rows, parts = [], []
        for i, (low, high) in enumerate(itertools.pairwise(self.cutoffs)):
            idx = np.flatnonzero((labels >= low) & (labels < high))
            if idx.size == 0:
                continue
            head_index[idx] = self.shortlist_size + i
            relative = Tensor(xp.asarray(labels[idx] - low).reshape(-1, 1), device=dev)
            chosen = index_select(input, 0, Tensor(xp.asarray(idx), device=dev))
            cluster_logprob = F.log_softmax(self.tail[i](chosen), dim=1)
            rows.append(idx)
            parts.append(gather(cluster_logprob, 1, relative).reshape(-1))
        head_part = gather(head_logprob, 1, Tensor(xp.asarray(head_index).reshape(-1, 1), device=dev)).reshape(-1)
        output = head_part
        if parts:  # tail rows' in-cluster terms, put back in row order
            shortlist = np.flatnonzero(labels < self.shortlist_size)
            order = np.concatenate([shortlist, *rows])
            zeros = Tensor(xp.zeros(shortlist.size, dtype=input.array.dtype), device=dev)
            tail_terms = index_select(cat([zeros, *parts]), 0, Tensor(xp.asarray(np.argsort(order)), device=dev))
            output = output + tail_terms
        loss = red.mean(-output)
        return _ASMoutput(output if batched else output.reshape(()), loss)

    def _full_log_prob(self, input, head_output):
        """(N, n_classes) log-probabilities of every class."""
        head_logprob = F.log_softmax(head_output, dim=1)
        pieces = [head_logprob[:, : self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster_logprob = F.log_softmax(self.tail[i](input), dim=1)
            pieces.append(cluster_logprob + head_logprob[:, self.shortlist_size + i].unsqueeze(1))
        return cat(pieces, dim=1)

    def log_prob(self, input):
        """Log-probabilities of all n_classes classes for each row of input (N, in_features)."""
        return self._full_log_prob(input, self.head(input))

    def predict(self, input):
        """The most probable class of each row: the head's argmax when it lies in the shortlist, else the
        argmax of the full distribution (computed only for those rows)."""
        head_output = self.head(input)
        output = red.argmax(head_output, dim=1)
        outside = np.asarray(output.__array__()) >= self.shortlist_size
        if not outside.any():
            return output
        xp, dev = input.device.xp, input.device
        idx = Tensor(xp.asarray(np.flatnonzero(outside)), device=dev)
        full = self._full_log_prob(index_select(input, 0, idx), index_select(head_output, 0, idx))
        result = xp.array(output.array, copy=True)
        result[idx.array] = red.argmax(full, dim=1).array
        return Tensor(result, device=dev)
