"""Samplers with torch.utils.data's names and rules: which indices a DataLoader visits, in what order.

A sampler is an iterable of dataset indices (a BatchSampler: of lists of them), re-iterated every
epoch. The random ones draw from a numpy Generator: `generator=` takes a `dg.Generator` (its numpy stream, read at each
epoch: a `manual_seed` or `set_state` on it since counts, as in torch), a `numpy.random.Generator` (the kind distgraph's `nn.init`
functions take) or an int seed, turned into one Generator when the sampler is built, so each epoch
continues its stream (a new order every epoch, the same orders for the same seed). Without one (or with
`dg.default_generator`) they draw from distgraph's global generator at each epoch, so `dg.manual_seed`
fixes every order of a run. The streams are numpy's, not
torch's: the distributions are the same, the numbers are not.
"""

import math
import numbers

import numpy as np

from distgraph.backend import CPU, to_host
from distgraph.errors import ConfigError, DTypeError, SampleCountError
from distgraph.ops.rng import Generator, default_generator
from distgraph.ops.rng import generator as _global_generator


def as_generator(generator, owner):
    """What a sampler keeps: None (the global generator, looked up per epoch), a numpy Generator, a cpu
    dg.Generator (its stream read at each draw: `stream_of`), or a seed's numpy Generator."""
    if generator is None or generator is default_generator:
        return None
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, Generator) and generator.device.type == "cpu":
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise ConfigError(
        f"{owner}: generator must be a numpy.random.Generator or an int seed (or a cpu distgraph.Generator), got "
        f"{type(generator).__name__}"
    )


def stream_of(generator):
    """The numpy Generator to draw from now for what `as_generator` kept: a dg.Generator's current stream (so its
    manual_seed or set_state since counts, as torch's), the global one for None."""
    if isinstance(generator, Generator):
        return generator.stream
    return generator if generator is not None else _global_generator(CPU)


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


class Sampler:
    """Base class: subclasses give `__iter__` (indices, or lists of them) and usually `__len__`.

    `data_source` is accepted and ignored, as torch still accepts it."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1, every epoch."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """Without replacement: a fresh permutation of every index per pass (num_samples > len repeats whole
    permutations, then a prefix of one). With replacement: num_samples independent uniform draws."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self._num_samples = data_source, replacement, num_samples
        self.generator = as_generator(generator, "RandomSampler")
        if not isinstance(replacement, bool):  # torch: a TypeError here (a ValueError in WeightedRandomSampler)
            raise DTypeError(f"RandomSampler: replacement should be a boolean value, but got replacement={replacement}")
        if not _is_positive_int(self.num_samples):
            raise ConfigError(
                f"RandomSampler: num_samples should be a positive integer value, but got num_samples={self.num_samples}"
            )

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n, gen = len(self.data_source), stream_of(self.generator)
        if self.replacement:
            yield from gen.integers(0, n, size=self.num_samples).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from gen.permutation(n).tolist()
        yield from gen.permutation(n)[: self.num_samples % n].tolist()

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices, in a fresh random order every epoch."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = as_generator(generator, "SubsetRandomSampler")

    def __iter__(self):
        for i in stream_of(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """num_samples indices drawn with probability proportional to `weights` (need not sum to 1); with
    replacement by default, as torch.multinomial draws them."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not _is_positive_int(num_samples):
            raise ConfigError(
                f"WeightedRandomSampler: num_samples should be a positive integer value, but got num_samples={num_samples}"
            )
        if not isinstance(replacement, bool):
            raise ConfigError(
                f"WeightedRandomSampler: replacement should be a boolean value, but got replacement={replacement}"
            )
        w = to_host(weights).astype(np.float64)  # (weights on a GPU, or requiring grad, as torch takes them)
        if w.ndim != 1:
            raise ConfigError(
                f"WeightedRandomSampler: weights should be a 1d sequence but given weights have shape {w.shape}"
            )
        if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ConfigError("WeightedRandomSampler: weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > len(w):
            raise SampleCountError(
                f"WeightedRandomSampler: cannot draw num_samples={num_samples} without replacement from "
                f"{len(w)} weights"
            )
        self.weights, self.num_samples, self.replacement = w, num_samples, replacement
        self.generator = as_generator(generator, "WeightedRandomSampler")

    def __iter__(self):
        gen, w = stream_of(self.generator), self.weights
        if self.replacement:
            yield from gen.choice(len(w), self.num_samples, p=w / w.sum()).tolist()
            return
        # Without replacement as torch.multinomial draws it: the largest w / Exp(1) keys (the same law as
        # drawing one by one without putting back); zero weights come last, once the others are used up.
        keys = w / gen.exponential(size=len(w))
        yield from np.argsort(-keys, kind="stable")[: self.num_samples].tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of batch_size (the last one shorter unless drop_last)."""

    def __init__(self, sampler, batch_size, drop_last):
        if not _is_positive_int(batch_size):
            raise ConfigError(
                f"BatchSampler: batch_size should be a positive integer value, but got batch_size={batch_size}"
            )
        if not isinstance(drop_last, bool):
            raise ConfigError(f"BatchSampler: drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last

    def __iter__(self):
        batch = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
